"""Arena under load: N submissions queued at once, W workers, leaderboard reads meanwhile.

Starts a real `swarmpress arena serve` on a fresh home (the embedded pool), submits N
copies of the zstd baseline solution over HTTP as fast as possible, keeps R reader threads
reading the leaderboard until every submission is scored, then checks that each one has
its stored per-tensor results. Reports wall time, throughput and read latency p50/p99.

Run: python benchmarks/arena_load.py [--submissions 200] [--workers 2] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from swarmpress.arena.config import default_config, dump_config
from swarmpress.arena.export import export_solution
from swarmpress.arena.service import init_home


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def run(submissions: int, workers: int, readers: int, tensors: int, home: Path) -> dict:
    cfg = default_config()
    for c in cfg.competition:
        c.tensors_per_round = tensors
    init_home(home, config=cfg)
    (home / "arena.toml").write_text(dump_config(cfg))
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "swarmpress.cli", "arena", "serve", "--home", str(home),
         "--port", str(port), "--workers", str(workers)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        key = None
        while key is None:
            line = server.stdout.readline()
            if not line:
                raise RuntimeError("the server exited before printing its admin key")
            if m := re.search(r"(sp_[A-Za-z0-9_-]+)", line):
                key = m.group(1)
        for _ in range(300):
            try:
                httpx.get(url + "/api/health")
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        code = export_solution("zstd", home / "zstd_solution.py").read_bytes()
        return _load(url, key, code, submissions, readers, tensors)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _load(url: str, key: str, code: bytes, n: int, readers: int, tensors: int) -> dict:
    client = httpx.Client(base_url=url, timeout=60, headers={"X-API-Key": key})
    submit_lat: list[float] = []

    def submit(_: int) -> int:
        t = time.perf_counter()
        r = client.post("/api/submissions", files={"file": ("zstd.py", code)},
                        data={"competition": "lossless"})  # fmt: skip
        submit_lat.append(time.perf_counter() - t)
        r.raise_for_status()
        return r.json()["id"]

    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(submit, range(n)))
    queued = time.perf_counter() - start
    stop = threading.Event()
    read_lat: list[float] = []
    errors: list[str] = []

    def read() -> None:
        c = httpx.Client(base_url=url, timeout=60)
        while not stop.is_set():
            t = time.perf_counter()
            r = c.get("/api/competitions/lossless/leaderboard")
            read_lat.append(time.perf_counter() - t)
            if r.status_code != 200:
                errors.append(f"HTTP {r.status_code}")
            time.sleep(0.05)

    threads = [threading.Thread(target=read, daemon=True) for _ in range(readers)]
    for t in threads:
        t.start()
    pending = set(ids)
    while pending:
        time.sleep(1.0)
        for sid in list(pending):
            if client.get(f"/api/submissions/{sid}").json()["state"] in ("done", "failed"):
                pending.discard(sid)
    total = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join()
    states = [client.get(f"/api/submissions/{sid}").json() for sid in ids]
    complete = sum(s["state"] == "done" and len(s["results"]) == tensors for s in states)
    ms = lambda v: round(1000 * v, 1)  # noqa: E731
    return {
        "submissions": n,
        "complete_with_results": complete,
        "tensors_per_submission": tensors,
        "queue_seconds": round(queued, 2),
        "total_seconds": round(total, 1),
        "submissions_per_minute": round(60 * n / total, 1),
        "leaderboard_reads": len(read_lat),
        "leaderboard_p50_ms": ms(_pct(read_lat, 50)),
        "leaderboard_p99_ms": ms(_pct(read_lat, 99)),
        "leaderboard_max_ms": ms(max(read_lat)),
        "read_errors": len(errors),
        "submit_p50_ms": ms(_pct(submit_lat, 50)),
        "submit_p99_ms": ms(_pct(submit_lat, 99)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--submissions", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--readers", type=int, default=2)
    p.add_argument("--tensors", type=int, default=4, help="held-out tensors per submission")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args()
    home = Path(tempfile.mkdtemp(prefix="swarmpress-arena-load-"))
    try:
        out = run(args.submissions, args.workers, args.readers, args.tensors, home)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    out["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    out["workers"] = args.workers
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if out["complete_with_results"] == args.submissions and not out["read_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
