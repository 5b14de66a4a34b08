"""A run's first orchestrator for the failover tests, in its own process so that it can be
SIGKILLed: prints one JSON line per step; `--die after-save:K` kills itself right after
step K's decision is saved and before any worker hears it, `--die mid-step:K` after step K
routed half its samples (run with `python -m tests.swarm.failover_primary`)."""

from __future__ import annotations

import argparse
import json
import os
import signal

from swarmpress.swarm.config import build_config
from swarmpress.swarm.orchestrator import Orchestrator
from swarmpress.swarm.run import load_data

SMALL = {"layers": 2, "dim": 64, "heads": 4, "ffn": 172, "seq_len": 64, "microbatch": 2}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--state", default=None)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--die", default="none")
    ap.add_argument("--lease", type=float, default=5.0)
    a = ap.parse_args()
    cfg = build_config("tiny", steps=a.steps, merge_every=4, router="round-robin", **SMALL)

    def on_step(step: int, _info: dict) -> None:
        print(json.dumps({"step": step}), flush=True)

    orch = Orchestrator(cfg, load_data(cfg), run_dir=a.run_dir, state_url=a.state,
                        lease_s=a.lease, on_step=on_step)  # fmt: skip
    how, _, at = a.die.partition(":")
    die = lambda: os.kill(os.getpid(), signal.SIGKILL)  # noqa: E731
    if how == "after-save":
        save = orch.save

        def save_then_die() -> None:
            save()
            if orch.decision is not None and orch.decision["step"] == int(at):
                die()

        orch.save = save_then_die
    elif how == "mid-step":
        route = orch._route

        def route_then_die(sample, attempt, step, evaluating=False):
            route(sample, attempt, step, evaluating)
            if step == int(at) and sample == cfg.microbatches // 2 and not evaluating:
                orch.ep.flush()
                die()

        orch._route = route_then_die
    res = orch.run().to_json()
    print(json.dumps({"final_loss": res["final_loss"], "faults": res["faults"]}), flush=True)


if __name__ == "__main__":
    main()
