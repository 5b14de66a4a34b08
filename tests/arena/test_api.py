"""The HTTP API over a real arena (FastAPI's TestClient), schema included."""

import json
from pathlib import Path

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
    assert "drawStaircase" in client.get("/static/app.js").text


def test_published_openapi_schema_matches_the_app(arena):
    schema = TestClient(create_app(arena)).get("/openapi.json").json()
    assert "/api/submissions" in schema["paths"]
    published = json.loads(SCHEMA.read_text())
    assert published["paths"].keys() == schema["paths"].keys(), (
        "docs/arena/openapi.json is stale: "
        "run swarmpress arena openapi --out docs/arena/openapi.json"
    )
