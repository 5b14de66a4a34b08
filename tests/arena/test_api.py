"""The HTTP API over a real arena (FastAPI's TestClient), schema included."""

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from swarmpress.arena.api import create_app
from swarmpress.arena.worker import Worker
from tests.arena.conftest import solution

SCHEMA = Path(__file__).resolve().parents[2] / "docs" / "arena" / "openapi.json"


def test_submit_status_leaderboard_download_over_http(arena):
    admin = arena.create_key("root", admin=True)
    client = TestClient(create_app(arena))
    made = client.post("/api/keys", json={"name": "ivy"}, headers={"X-API-Key": admin})
    assert made.status_code == 201
    key = made.json()["key"]
    r = client.post(
        "/api/submissions",
        files={"file": ("zstd.py", solution("zstd"))},
        data={"competition": "lossless"},
        headers={"X-API-Key": key},
    )
    assert r.status_code == 201
    sid = r.json()["id"]
    assert client.get(f"/api/submissions/{sid}").json()["state"] == "queued"
    Worker(arena, slot=2).run_once()
    st = client.get(f"/api/submissions/{sid}").json()
    assert st["state"] == "done" and st["score"] > 0 and len(st["results"]) == 2
    board = client.get("/api/competitions/lossless/leaderboard").json()
    assert board[0]["id"] == sid and board[0]["leader"]
    assert len(client.get("/api/competitions/lossless/staircase").json()) == 1
    assert client.get(f"/api/submissions/{sid}/code").status_code == 403
    own = client.get(f"/api/submissions/{sid}/code", headers={"X-API-Key": key})
    assert own.status_code == 200 and own.content == solution("zstd")
    assert client.get(f"/api/submissions/{sid}/lineage").json()["tree"]["id"] == sid


def test_errors_are_json_with_meaningful_status(arena):
    key = arena.create_key("jo")
    client = TestClient(create_app(arena))
    post = lambda **kw: client.post("/api/submissions", **kw)  # noqa: E731
    files = {"file": ("zstd.py", solution("zstd"))}
    assert post(files=files, data={"competition": "lossless"}).status_code == 401
    r = post(files={"file": ("x.py", b"x = 1\n")}, data={"competition": "lossless"},
             headers={"X-API-Key": key})  # fmt: skip
    assert r.status_code == 400 and "neither" in r.json()["error"]
    assert client.get("/api/submissions/9999").status_code == 404
    assert client.get("/api/competitions/nope/leaderboard").status_code == 404
    made = client.post("/api/keys", json={"name": "x"}, headers={"X-API-Key": key})
    assert made.status_code == 403
    for _ in range(4):
        post(files=files, data={"competition": "lossy"}, headers={"X-API-Key": key})
    r = post(files=files, data={"competition": "lossy"}, headers={"X-API-Key": key})
    assert r.status_code == 429


def test_public_sample_is_served_and_the_pool_is_not(arena):
    client = TestClient(create_app(arena))
    comps = client.get("/api/competitions").json()
    assert {c["name"] for c in comps} == {"lossless", "lossy"}
    name = comps[0]["public_sample"][0]
    data = client.get(f"/api/competitions/lossless/sample/{name}").content
    assert len(data) % 2 == 0 and len(data) > 0
    held = arena.pool.held_out[0].name
    assert client.get(f"/api/competitions/lossless/sample/{held}").status_code == 404


def test_dashboard_pages_are_served(arena):
    client = TestClient(create_app(arena))
    assert "swarmpress arena" in client.get("/").text
    assert "Per-tensor results" in client.get("/submissions/1").text
    assert 'id="why"' in client.get("/submissions/1").text
    assert 'id="recent"' in client.get("/").text
    assert "drawStaircase" in client.get("/static/app.js").text


def test_published_openapi_schema_matches_the_app(arena):
    schema = TestClient(create_app(arena)).get("/openapi.json").json()
    assert "/api/submissions" in schema["paths"]
    published = json.loads(SCHEMA.read_text())
    assert published["paths"].keys() == schema["paths"].keys(), (
        "docs/arena/openapi.json is stale: "
        "run swarmpress arena openapi --out docs/arena/openapi.json"
    )


# ----------------------------------------------------------------------------- uploads
HUGE = 300 << 20


def asgi_post(app, headers: dict[str, str], chunks) -> tuple[int, dict, int]:
    """POST /api/submissions straight into the ASGI app with a body fed chunk by chunk from
    an iterator; returns (status, json body, bytes the app pulled from the body)."""
    import asyncio

    pulled, sent = 0, {}

    async def receive():
        nonlocal pulled
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(msg):
        if msg["type"] == "http.response.start":
            sent["status"] = msg["status"]
        elif msg["type"] == "http.response.body":
            sent["body"] = sent.get("body", b"") + msg.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/api/submissions",
             "raw_path": b"/api/submissions", "query_string": b"", "root_path": "",
             "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
             "client": ("127.0.0.1", 1), "server": ("testserver", 80)}  # fmt: skip
    asyncio.run(app(scope, receive, send))
    return sent["status"], json.loads(sent["body"]), pulled


def _endless(prefix: bytes = b""):
    import itertools

    return itertools.chain([prefix], itertools.repeat(b"x" * 65536))


MULTIPART = "multipart/form-data; boundary=B"
PREFIX = (
    b'--B\r\nContent-Disposition: form-data; name="competition"\r\n\r\nlossless\r\n'
    b'--B\r\nContent-Disposition: form-data; name="file"; filename="a.py"\r\n\r\n'
)


def test_uploads_without_a_valid_key_are_refused_before_the_body_is_read(arena):
    app = create_app(arena)
    for headers in ({}, {"X-API-Key": "sp_unknown"}):
        headers = {**headers, "content-type": MULTIPART, "content-length": str(HUGE)}
        status, body, pulled = asgi_post(app, headers, _endless())
        assert status == 401 and "key" in body["error"] and pulled == 0
        headers.pop("content-length")  # chunked: still nothing read
        status, _, pulled = asgi_post(app, headers, _endless())
        assert status == 401 and pulled == 0


def test_oversized_uploads_are_refused_by_length_or_while_streaming(arena):
    app = create_app(arena)
    key = {"X-API-Key": arena.create_key("kai"), "content-type": MULTIPART}
    status, body, pulled = asgi_post(app, {**key, "content-length": str(HUGE)}, _endless())
    assert status == 413 and "65536" in body["error"] and pulled == 0
    status, body, pulled = asgi_post(app, key, _endless(PREFIX))  # chunked, no length
    assert status == 413 and pulled <= 65536 + 16384 + 2 * 65536
    assert arena.queue_depth() == {}


def test_a_real_server_answers_before_taking_the_body(arena):
    import socket
    import time

    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(arena), host="127.0.0.1", port=0,
                                           log_level="error"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(b"POST /api/submissions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         + MULTIPART.encode() + f"\r\nContent-Length: {HUGE}\r\n\r\n".encode()
                         + b"x" * 65536)  # fmt: skip
            reply = b""
            while chunk := sock.recv(4096):  # the server closes: it takes no more body
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 401") and b"connection: close" in reply.lower()
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_malformed_upload_forms_are_refused_clearly(arena):
    key = arena.create_key("lia")
    client = TestClient(create_app(arena))
    hdr = {"X-API-Key": key}
    post = lambda headers=hdr, **kw: client.post("/api/submissions", headers=headers, **kw)  # noqa: E731
    files = {"file": ("zstd.py", solution("zstd"))}
    r = post(files=files)
    assert r.status_code == 400 and "competition" in r.json()["error"]
    r = post(data={"competition": "lossless"}, files={"other": ("a.py", b"x")})
    assert r.status_code == 400 and "file" in r.json()["error"]
    r = post(content=b"competition=lossless", headers={**hdr, "content-type": "text/plain"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = post(files=files, data={"competition": "lossless", "fork": "abc"})
    assert r.status_code == 422 and "fork" in r.json()["error"]
    r = post(files={"file": ("big.py", b"#" * 70_000)}, data={"competition": "lossless"})
    assert r.status_code == 400 and "65536" in r.json()["error"]  # the competition's cap
    r = post(files={"file": ("big.py", b"#" * 90_000)}, data={"competition": "lossless"})
    assert r.status_code == 413  # past the largest cap plus the form: not read further
    r = post(files=files, data={"competition": "lossless", "fork": ""})
    assert r.status_code == 201
    r = post(content=b"--B\r\nbroken", headers={**hdr, "content-type": MULTIPART})
    assert r.status_code == 400


def test_big_and_negative_ids_are_404_or_422_on_every_route(arena):
    key = arena.create_key("max")
    client = TestClient(create_app(arena))
    for sid in (2**63, 2**64, -1, 0, 10**30):
        for url in (f"/api/submissions/{sid}", f"/api/submissions/{sid}/code",
                    f"/api/submissions/{sid}/lineage"):  # fmt: skip
            assert client.get(url, headers={"X-API-Key": key}).status_code in (404, 422), url
        r = client.post("/api/submissions", files={"file": ("z.py", solution("zstd"))},
                        data={"competition": "lossless", "fork": str(sid)},
                        headers={"X-API-Key": key})  # fmt: skip
        assert r.status_code in (404, 422), (sid, r.text)
        assert client.get(f"/submissions/{sid}").status_code == 200  # the page itself


def test_deeply_nested_sources_are_400_not_500(arena):
    client = TestClient(create_app(arena))
    r = client.post("/api/submissions", files={"file": ("d.py", b"x" + b"+x" * 30_000)},
                    data={"competition": "lossless"},
                    headers={"X-API-Key": arena.create_key("ned")})  # fmt: skip
    assert r.status_code == 400 and r.json()["error"]


def test_key_names_are_checked_over_http(arena):
    client = TestClient(create_app(arena))
    admin = {"X-API-Key": arena.create_key("root", admin=True)}
    for name in ("x" * 200, "a\x00b", ""):
        r = client.post("/api/keys", json={"name": name}, headers=admin)
        assert r.status_code == 400 and "key name" in r.json()["error"], name
    assert client.post("/api/keys", json={"name": "ok"}).status_code == 401


def test_the_schema_describes_the_upload_form(arena):
    schema = TestClient(create_app(arena)).get("/openapi.json").json()
    body = schema["paths"]["/api/submissions"]["post"]["requestBody"]
    form = body["content"]["multipart/form-data"]["schema"]
    assert {"file", "competition", "fork"} <= form["properties"].keys()
    assert set(form["required"]) == {"file", "competition"}
    published = json.loads(SCHEMA.read_text())
    assert published["paths"]["/api/submissions"] == schema["paths"]["/api/submissions"]


def test_the_client_refuses_a_file_over_the_cap_before_sending_it(arena, tmp_path):
    from swarmpress.arena.client import ArenaClient, ClientError

    client = ArenaClient("http://testserver", arena.create_key("oli"))
    client.http = TestClient(create_app(arena))
    big = tmp_path / "big.py"
    big.write_bytes(solution("zstd") + b"#" * 65536)
    with pytest.raises(ClientError, match="takes at most 65536") as info:
        client.submit(big, "lossless")
    assert info.value.status is None  # refused here, not by the server
    small = tmp_path / "z.py"
    small.write_bytes(solution("zstd"))
    assert client.submit(small, "lossless") > 0
