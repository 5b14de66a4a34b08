"""The twin's goals, measured: speed (in-process and over HTTP), the large swarm's wall time
and memory, the best policy against random and capacity-aware routing, and the codec
crossover bandwidth against the bench's break-even figure.

Run: python benchmarks/twin_bench.py [--json docs/results/twin/twin.json] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from swarmpress.twin.policies import parse_policy
from swarmpress.twin.profiles import NONE, get_profile
from swarmpress.twin.remote import RemotePolicy, wait_healthy
from swarmpress.twin.scenario import load_scenario
from swarmpress.twin.sim import Simulation


def sim(name, seed, policy="best", codec=NONE, overrides=()):
    sc = load_scenario(name, list(overrides))
    r, b = parse_policy(policy)
    return Simulation(sc, seed, r, b, codec).run()


def speed(seeds: int) -> dict:
    out = {}
    for policy in ("random", "best"):
        runs = [sim("apex-default", s, policy) for s in range(seeds)]
        out[policy] = {
            "simulated_s": sum(r.simulated_seconds for r in runs),
            "wall_s": sum(r.wall_seconds for r in runs),
        }
        out[policy]["x_real_time"] = out[policy]["simulated_s"] / out[policy]["wall_s"]
    return out


def http_speed() -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "swarmpress.twin.baseline_server", "--port",
                             str(port)])  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_healthy(url):
            raise RuntimeError("the baseline router did not start")
        sc = load_scenario("apex-default")
        remote = RemotePolicy(url)
        calls = {"n": 0, "bytes": 0, "s": 0.0}
        post = remote._post

        def counted(path, body):
            t = time.perf_counter()
            try:
                return post(path, body)
            finally:
                calls["n"] += 1
                calls["bytes"] += len(body)
                calls["s"] += time.perf_counter() - t

        remote._post = counted
        res = Simulation(sc, 0, remote, remote).run()
        return {
            "ok": res.ok,
            "simulated_s": res.simulated_seconds,
            "wall_s": res.wall_seconds,
            "x_real_time": res.speedup,
            "calls": calls["n"],
            "mean_request_kb": calls["bytes"] / max(calls["n"], 1) / 1e3,
            "mean_call_ms": 1e3 * calls["s"] / max(calls["n"], 1),
            "engine_share_of_wall": 1 - calls["s"] / res.wall_seconds,
        }
    finally:
        proc.kill()
        proc.wait()


def large() -> dict:
    """In a fresh process, so the wall time is not slowed by tracing and the peak resident
    memory (ru_maxrss) is this run's alone."""
    code = (
        "import json, resource, sys; sys.path.insert(0, 'benchmarks');"
        "from twin_bench import sim; r = sim('large', 0, 'best');"
        "print(json.dumps({'ok': r.ok, 'wall_s': r.wall_seconds,"
        " 'simulated_s': r.simulated_seconds, 'completed': r.completed, 'dropped': r.dropped,"
        " 'total_epoch_time': r.total_epoch_time,"
        " 'peak_rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def policies(seeds: int) -> dict:
    out = {}
    for policy in ("random", "capacity-aware", "capacity-aware+throughput", "least-loaded", "best"):
        totals = [sim("apex-default", s, policy).total_epoch_time for s in range(seeds)]
        out[policy] = {"median_total_epoch_time": statistics.median(totals), "totals": totals}
    base = out["random"]["median_total_epoch_time"]
    for v in out.values():
        v["vs_random"] = v["median_total_epoch_time"] / base - 1
    return out


def crossover(codec_name: str = "lossy:mode=fast") -> dict:
    """Sweep the link speed of the link-bound swarm; find where the codec stops paying."""
    codec = get_profile(codec_name)
    predicted = codec.activation.break_even_bps() * 8 / 1e6  # Mbit/s
    rows = []
    for mbit in [predicted * f for f in (0.25, 0.5, 0.7, 0.85, 1.0, 1.2, 1.5, 2.0, 4.0)]:
        over = [f"swarm.upload_mbit.median={mbit}", "swarm.upload_mbit.sigma=0",
                f"swarm.download_mbit.median={mbit}", "swarm.download_mbit.sigma=0",
                "workload.epochs=1", "workload.activations_per_epoch=300"]  # fmt: skip
        t_none = statistics.median(sim("link-bound", s, "best", NONE, over).total_epoch_time
                                   for s in range(3))  # fmt: skip
        t_codec = statistics.median(sim("link-bound", s, "best", codec, over).total_epoch_time
                                    for s in range(3))  # fmt: skip
        rows.append({"mbit": mbit, "none": t_none, "codec": t_codec, "gain": 1 - t_codec / t_none})
    cross = None
    for a, b in itertools.pairwise(rows):
        if a["gain"] > 0 >= b["gain"]:  # interpolate the zero crossing of the gain
            f = a["gain"] / (a["gain"] - b["gain"])
            cross = a["mbit"] + f * (b["mbit"] - a["mbit"])
            break
    return {"codec": codec_name, "predicted_break_even_mbit": predicted,
            "measured_crossover_mbit": cross,
            "error": None if cross is None else cross / predicted - 1, "sweep": rows}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--quick", action="store_true", help="fewer seeds, no large swarm")
    args = p.parse_args()
    seeds = 2 if args.quick else 5
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "speed_in_process": speed(seeds),
        "speed_http": http_speed(),
        "policies": policies(seeds),
        "crossover": crossover(),
    }
    if not args.quick:
        out["large"] = large()
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
