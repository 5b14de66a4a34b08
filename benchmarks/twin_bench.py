"""The twin's goals, measured: speed (in-process, and with an external router over HTTP
with where that run's time goes), the large swarm's wall time and memory, the best policy
against random and capacity-aware routing, and the codec crossover bandwidth against the
bench's break-even figure.

Run: python benchmarks/twin_bench.py [--json docs/results/twin/twin.json] [--quick]
     [--speed-only]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
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


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _per_call(fn, bodies: list[bytes], repeat: int = 3) -> float:
    """Seconds per call of fn over the sampled request bodies (best of `repeat`)."""
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        for b in bodies:
            fn(b)
        best = min(best, (time.perf_counter() - t) / len(bodies))
    return best


def http_speed(seeds: int) -> dict:
    """An external router over HTTP on loopback (the baseline server, in its own process)
    against the in-process random router on the same seeds, with where the time goes:

    engine: the simulation outside the router calls; request: building the /route body
    and reading the answer (RemotePolicy.route less the transport); server: the router's
    own handling (decode, route, encode), timed by replaying sampled request bodies to the
    server's handler in this process; http: the rest of the transport's time (the socket
    client, loopback copies, the server's HTTP parsing and thread wake-ups)."""
    import msgspec

    from swarmpress.twin.baseline_server import create_handler

    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "swarmpress.twin.baseline_server", "--port",
                             str(port)])  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_healthy(url, timeout=60):
            raise RuntimeError("the baseline router did not start")
        sc = load_scenario("apex-default")
        t = {"route": 0.0, "transport": 0.0, "balance": 0.0, "wall": 0.0, "simulated": 0.0}
        n = {"route": 0, "balance": 0, "bytes": 0, "connects": 0}
        samples: list[bytes] = []
        runs = []
        for seed in range(seeds):
            remote = RemotePolicy(url)
            transport, route, assign = remote.transport, remote.route, remote.assign
            request = transport.request

            def timed_request(method, path, body, timeout, request=request):
                t0 = time.perf_counter()
                try:
                    return request(method, path, body, timeout)
                finally:
                    if path == "/route":
                        t["transport"] += time.perf_counter() - t0
                        n["bytes"] += len(body)
                        if n["route"] % 25 == 0:
                            samples.append(body)

            def timed_route(*a, route=route):
                t0 = time.perf_counter()
                try:
                    return route(*a)
                finally:
                    t["route"] += time.perf_counter() - t0
                    n["route"] += 1

            def timed_assign(*a, assign=assign):
                t0 = time.perf_counter()
                try:
                    return assign(*a)
                finally:
                    t["balance"] += time.perf_counter() - t0
                    n["balance"] += 1

            transport.request = timed_request
            remote.route, remote.assign = timed_route, timed_assign
            res = Simulation(sc, seed, remote, remote).run()
            n["connects"] += transport.connects
            transport.close()
            local = sim("apex-default", seed, "random")
            runs.append({"seed": seed, "ok": res.ok, "reason": res.reason,
                         "simulated_s": res.simulated_seconds, "wall_s": res.wall_seconds,
                         "x_real_time": res.speedup,
                         "in_process_random_x": local.speedup})  # fmt: skip
            t["wall"] += res.wall_seconds
            t["simulated"] += res.simulated_seconds
    finally:
        proc.kill()
        proc.wait()
    calls = n["route"]
    handle = create_handler(0)
    server_s = _per_call(lambda b: handle("POST", "/route", b), samples) * calls
    split = {
        "engine": t["wall"] - t["route"] - t["balance"],
        "request_building": t["route"] - t["transport"],
        "http": t["transport"] - server_s,
        "server": server_s,
        "balance_calls": t["balance"],
    }
    full = {"json.loads": _per_call(json.loads, samples),
            "msgspec.json.decode": _per_call(msgspec.json.decode, samples)}  # fmt: skip
    return {
        "router": "swarmpress.twin.baseline_server (random routing), own process, loopback",
        "ok": all(r["ok"] for r in runs),
        "simulated_s": t["simulated"],
        "wall_s": t["wall"],
        "x_real_time": t["simulated"] / t["wall"],
        "in_process_random_x_same_seeds": statistics.median(r["in_process_random_x"] for r in runs),
        "route_calls": calls,
        "balance_calls": n["balance"],
        "connections": n["connects"],
        "mean_request_kb": n["bytes"] / max(calls, 1) / 1e3,
        "mean_call_ms": 1e3 * t["route"] / max(calls, 1),
        "where_the_time_goes_s": split,
        "where_the_time_goes_ms_per_route_call": {
            k: 1e3 * v / max(calls, 1) for k, v in split.items()
        },
        # A router that decodes the whole request (this one decodes only what it reads):
        # its decode alone, per call, and the speed the same run would have had with it.
        "full_decode_ms_per_call": {k: 1e3 * v for k, v in full.items()},
        "x_real_time_if_full_decode": {
            k: t["simulated"] / (t["wall"] + v * calls - server_s) for k, v in full.items()
        },
        "runs": runs,
    }


def large() -> dict:
    """In a fresh process, so the wall time is not slowed by tracing and the peak resident
    memory is this run's alone: VmHWM, the high-water mark of the process's own memory
    map. (ru_maxrss is not: Linux carries the spawning process's peak over the exec, and
    this benchmark's own process had reached 360-430 MB by then.)"""
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks');"
        "from twin_bench import sim; r = sim('large', 0, 'best');"
        "hwm = next(int(l.split()[1]) for l in open('/proc/self/status')"
        " if l.startswith('VmHWM:'));"
        "print(json.dumps({'ok': r.ok, 'wall_s': r.wall_seconds,"
        " 'simulated_s': r.simulated_seconds, 'completed': r.completed, 'dropped': r.dropped,"
        " 'total_epoch_time': r.total_epoch_time, 'peak_rss_mb': hwm / 1e3}))"
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


def crossover(codec_name: str = "lossy") -> dict:
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
    p.add_argument("--speed-only", action="store_true", help="only the two speed parts")
    args = p.parse_args()
    seeds = 2 if args.quick else 5
    out = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "speed_in_process": speed(seeds),
        "speed_http": http_speed(seeds),
    }
    if not args.speed_only:
        out["policies"] = policies(seeds)
        out["crossover"] = crossover()
    if not (args.quick or args.speed_only):
        out["large"] = large()
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
