"""Helpers shared by the arena's end-to-end tests: a real `arena serve` and the CLI."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import httpx

from tests.inprocess import run_cli


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, home, workers=2, db=None):
        self.home, self.workers, self.db = home, workers, db
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        env = {**os.environ, "SWARMPRESS_ARENA_LEASE": "3"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "swarmpress.cli", "arena", "serve", "--home", str(self.home),
             "--port", str(self.port), "--workers", str(self.workers),
             *(["--db", self.db] if self.db else [])],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
        )  # fmt: skip
        key = None
        end = time.time() + 60
        while time.time() < end:
            line = self.proc.stdout.readline()
            if m := re.search(r"(sp_[A-Za-z0-9_-]+)", line):
                key = m.group(1)
            if "arena at" in line:
                break
        while time.time() < end:
            try:
                if httpx.get(self.url + "/api/health").status_code == 200:
                    return key
            except httpx.HTTPError:
                time.sleep(0.2)
        self.kill()
        raise RuntimeError("server did not start")

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def cli(*args, server=None, key=None) -> subprocess.CompletedProcess:
    """`swarmpress arena ARGS` (the client side: submit, status, keys, ...), run in this
    process by tests.inprocess.run_cli: the same exit code, stdout and stderr as the
    console script, without starting an interpreter per call. The server and its workers
    stay real processes (Server)."""
    argv = ["arena", *args]
    if server:
        argv += ["--server", server]
    if key:
        argv += ["--key", key]
    return run_cli(*argv)


def wait_state(url, sid, states=("done", "failed"), timeout=90):
    end = time.time() + timeout
    while time.time() < end:
        st = httpx.get(f"{url}/api/submissions/{sid}").json()
        if st["state"] in states:
            return st
        time.sleep(0.2)
    raise AssertionError(f"submission {sid} stuck in {st['state']}")
