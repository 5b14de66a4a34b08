"""Data-layer fixtures: a store on SQLite and on PostgreSQL, records to fill it, and a
local HTTP server that replays recorded answers of network sources."""

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import pytest

from swarmpress.data.records import make_record
from swarmpress.data.store import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """An empty store; every test using it runs on SQLite and on PostgreSQL."""
    url = (
        str(tmp_path / "data.db")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    s = Store(url)
    yield s
    s.close()


def rec(i: int, text: str = "", source: str = "reddit", label: str | None = "r/Python",
        author: str = "alice", hours: float = 0.0):  # fmt: skip
    """Record i: distinct uri, its own time (T0 + i minutes + hours)."""
    content = {"text": text or f"post number {i}", "author": author, "title": f"title {i}"}
    when = T0 + timedelta(minutes=i, hours=hours)
    return make_record(f"https://example.org/{source}/{i}", when, source, content, label)


def post(i: int, sub: str = "Python") -> dict:
    return {"kind": "t3", "data": {
        "id": f"p{i}", "name": f"t3_p{i}", "title": f"Post {i}", "selftext": f"body {i}",
        "author": f"user{i % 3}", "subreddit": sub, "created_utc": 1772366400 + i * 60,
        "score": i, "num_comments": 2 * i, "permalink": f"/r/{sub}/comments/p{i}/post_{i}/",
        "is_self": True, "url": f"https://www.reddit.com/r/{sub}/comments/p{i}/",
    }}  # fmt: skip


def listing(children: list, after: str | None) -> dict:
    return {"kind": "Listing", "data": {"after": after, "children": children}}


class Replay:
    """path -> queue of (status, headers, body); every request is logged."""

    def __init__(self) -> None:
        self.routes: dict[str, list[tuple[int, dict, object]]] = {}
        self.log: list[tuple[str, dict, dict]] = []

    def add(self, path: str, status: int, body: object, headers: dict | None = None) -> None:
        self.routes.setdefault(path, []).append((status, headers or {}, body))


@pytest.fixture
def server():
    replay = Replay()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            u = urlparse(self.path)
            replay.log.append((u.path, parse_qs(u.query), dict(self.headers)))
            queue = replay.routes.get(u.path) or [(404, {}, {"message": "no route"})]
            status, headers, body = queue.pop(0) if len(queue) > 1 else queue[0]
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    replay.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield replay
    httpd.shutdown()
    httpd.server_close()
