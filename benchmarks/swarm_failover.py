"""Failover time of the swarm's orchestrator, measured with the commands users run.

A run (`swarmpress swarm train --run-dir DIR`) is SIGKILLed mid-run; its successor is

- a restart on the same host (`swarm train --resume DIR`): it sees that the holder's
  process is gone and takes over at once;
- a standby on "another host" (`swarm train --standby DIR`, started before the kill in its
  own UTS namespace with another host name, so it cannot see the old process and must wait
  for the lease to lapse).

The failover time is from the SIGKILL to the successor's first committed step (both clocks
are this machine's wall clock). Each is run with the state in SQLite and, given a URL,
PostgreSQL. The uninterrupted run of the same config gives the final loss every resumed
run must reach exactly (no sample lost or applied twice).

    python benchmarks/swarm_failover.py [--pg postgresql://...] [--out docs/results/swarm]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SWARMPRESS = str(Path(sys.executable).with_name("swarmpress"))
RUN = ["--preset", "tiny", "--steps", "60", "--link", "none", "--router", "round-robin"]
KILL_AFTER = 20  # steps the first orchestrator completes (at least) before it is killed


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _train(*args: str, uts: str | None = None) -> subprocess.Popen:
    cmd = [SWARMPRESS, "swarm", "train", *args, "--json"]
    if uts is not None:  # another host name: the standby cannot see the old process
        cmd = ["unshare", "--uts", "sh", "-c", f'hostname {uts} && exec "$@"', "sh", *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))  # fmt: skip


STEP_LINE = re.compile(r"\] step (\d+)/")  # `[  9.1 s] step 19/80  loss ...` (stderr)


def _steps(proc: subprocess.Popen, until: int | None = None, stamps: list | None = None):
    """Read a run's progress lines from stderr (plain lines: it is not a terminal) up to
    step `until`, noting when each step line arrived."""
    for line in proc.stderr:
        m = STEP_LINE.search(line)
        if m is None:
            continue
        step = int(m.group(1))
        if stamps is not None:
            stamps.append((step, time.time()))
        if until is not None and step >= until:
            return


def one(store: str, mode: str, base: Path, pg: str | None) -> dict:
    """One failover: a run killed after KILL_AFTER steps, resumed by `mode`."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"failover-{mode}-", dir=base))
    state = ["--state", pg] if store == "postgresql" else []
    first = _train("--run-dir", str(run_dir), *state, *RUN)
    _steps(first, until=KILL_AFTER)
    standby = _train("--standby", str(run_dir), uts="standby-host") if mode == "standby" else None
    time.sleep(1.0 if standby else 0.0)  # the standby is up and waiting
    t_kill = time.time()
    first.send_signal(signal.SIGKILL)
    first.wait()
    succ = standby or _train("--resume", str(run_dir))
    stamps: list[tuple[int, float]] = []
    _steps(succ, stamps=stamps)
    out, err = succ.communicate(timeout=600)
    if succ.returncode != 0:
        raise SystemExit(f"{mode}/{store}: the successor failed ({succ.returncode}): {err[-800:]}")
    res = json.loads(out)
    take = res["faults"]["takeovers"][-1]
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "store": store, "mode": mode,
        "failover_s": stamps[0][1] - t_kill if stamps else None,
        "first_resumed_step": stamps[0][0] if stamps else None,
        "waited_for_lease_s": take["waited_s"],
        "first_step_after_take_over_s": take["first_step_s"],
        "exactly_once": res["faults"]["exactly_once"],
        "final_loss": res["final_loss"], "steps": res["steps"],
        "state_save_s": res["faults"]["state_save_s"],
    }  # fmt: skip


def failover(pg: str | None = None) -> dict:
    """Every (store, mode) failover, and the uninterrupted run they must match."""
    base = Path(tempfile.mkdtemp(prefix="swarmpress-failover-"))
    try:
        whole = _train("--run-dir", str(base / "whole"), *RUN)
        out, err = whole.communicate(timeout=900)
        if whole.returncode != 0:
            raise SystemExit(f"the uninterrupted run failed: {err[-800:]}")
        ref = json.loads(out)
        log(f"uninterrupted: final loss {ref['final_loss']:.6f}")
        rows = []
        for store in ["sqlite"] + (["postgresql"] if pg else []):
            for mode in ("restart", "standby"):
                row = one(store, mode, base, pg)
                row["same_final_loss"] = row["final_loss"] == ref["final_loss"]
                log(f"{store}/{mode}: failover {row['failover_s']:.2f} s, exactly once "
                    f"{row['exactly_once']}, same loss {row['same_final_loss']}")  # fmt: skip
                rows.append(row)
        return {"uninterrupted_final_loss": ref["final_loss"], "kill_after_steps": KILL_AFTER,
                "run": RUN, "lease_s": 5.0, "rows": rows}  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


def failover_report(f: dict) -> list[str]:
    """The failover section of report.md."""
    lines = [
        "## Failover: the orchestrator SIGKILLed mid-run",
        "",
        f"`swarm train {' '.join(f['run'])}` killed (SIGKILL) after {f['kill_after_steps']} "
        "steps. *restart*: `swarm train --resume DIR` started after the kill on the same "
        "host (it sees the old process is gone and takes over at once). *standby*: `swarm "
        "train --standby DIR` waiting from before the kill under another host name (its own "
        "UTS namespace), so it must wait for the lease "
        f"({f['lease_s']:g} s) to lapse. Failover time: from the SIGKILL to the successor's "
        "first committed step. Every resumed run must end at the uninterrupted run's final "
        f"loss ({f['uninterrupted_final_loss']:.6f}) exactly: no sample lost or doubled.",
        "",
        "| state store | successor | failover (s) | waited for the lease (s) | exactly once "
        "| same final loss | state write per step (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in f["rows"]:
        lines.append(
            f"| {r['store']} | {r['mode']} | {r['failover_s']:.2f} | "
            f"{r['waited_for_lease_s']:.2f} | {r['exactly_once']} | {r['same_final_loss']} | "
            f"{1000 * r['state_save_s']:.1f} |"
        )
    return [*lines, ""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pg", help="PostgreSQL URL: also measure with the state there")
    ap.add_argument("--out", type=Path, help="write failover.json here")
    a = ap.parse_args()
    res = failover(a.pg)
    print("\n".join(failover_report(res)))
    if a.out:
        a.out.mkdir(parents=True, exist_ok=True)
        (a.out / "failover.json").write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
