"""API keys: listed (never the secret), revoked (then refused by the API), an admin key
replaced through the database, and `arena serve` making its one-time admin key only once
it holds its port."""

import json
import socket

import pytest
from fastapi.testclient import TestClient

from swarmpress.arena.api import create_app
from swarmpress.arena.service import Arena, AuthError, NotFound
from tests.arena.conftest import solution
from tests.arena.helpers import cli


def _upload(client, key, competition="lossless"):
    return client.post("/api/submissions", files={"file": ("z.py", solution("zstd"))},
                       data={"competition": competition}, headers={"X-API-Key": key})  # fmt: skip


def test_keys_are_listed_without_secrets_and_revoked_keys_are_refused_over_http(arena):
    root = arena.create_key("root", admin=True)
    admin = {"X-API-Key": root}
    client = TestClient(create_app(arena))
    ivy = client.post("/api/keys", json={"name": "ivy"}, headers=admin).json()["key"]
    sid = _upload(client, ivy).json()["id"]

    listed = client.get("/api/keys", headers=admin)
    assert listed.status_code == 200
    assert [(k["name"], k["admin"], k["revoked"]) for k in listed.json()] == [
        ("root", True, False),
        ("ivy", False, False),
    ]
    assert all(k["created"] > 0 and k["revoked_at"] is None for k in listed.json())
    for secret in (root, ivy, root[3:], ivy[3:]):
        assert secret not in listed.text
    assert "hash" not in listed.text
    assert client.get("/api/keys", headers={"X-API-Key": ivy}).status_code == 403
    assert client.get("/api/keys").status_code == 401
    r = client.post("/api/keys/revoke", json={"name": "root"}, headers={"X-API-Key": ivy})
    assert r.status_code == 403

    r = client.post("/api/keys/revoke", json={"name": "ivy"}, headers=admin)
    assert r.status_code == 200 and r.json() == {"name": "ivy", "revoked": 1, "keys": 1}
    r = _upload(client, ivy)
    assert r.status_code == 401 and "revoked" in r.json()["error"]
    assert client.get(f"/api/submissions/{sid}", headers={"X-API-Key": ivy}).json()[
        "detailed"] is False  # fmt: skip
    assert client.get(f"/api/submissions/{sid}/code", headers={"X-API-Key": ivy}).status_code == 403
    ivy_row = next(k for k in client.get("/api/keys", headers=admin).json() if k["name"] == "ivy")
    assert ivy_row["revoked"] and ivy_row["revoked_at"] >= ivy_row["created"]

    again = client.post("/api/keys/revoke", json={"name": "ivy"}, headers=admin)
    assert again.status_code == 200 and again.json()["revoked"] == 0  # already: no change
    r = client.post("/api/keys/revoke", json={"name": "nobody"}, headers=admin)
    assert r.status_code == 404 and "nobody" in r.json()["error"]

    # a revoked admin key can do nothing an admin can
    client.post("/api/keys/revoke", json={"name": "root"}, headers=admin)
    assert client.post("/api/keys", json={"name": "x"}, headers=admin).status_code == 401
    assert client.get("/api/keys", headers=admin).status_code == 401
    assert not arena.has_admin()  # `serve` makes a new admin key on its next start


def test_revoking_a_name_revokes_each_of_its_keys(arena):
    first, second = arena.create_key("kai"), arena.create_key("kai")
    other = arena.create_key("kim")
    assert arena.revoke_key("kai") == {"name": "kai", "revoked": 2, "keys": 2}
    for key in (first, second):
        with pytest.raises(AuthError, match="revoked"):
            arena.authenticate(key)
        with pytest.raises(AuthError, match="revoked"):
            arena.submit(key, "lossless", "z.py", solution("zstd"))
    assert arena.authenticate(other).name == "kim"
    with pytest.raises(NotFound, match="no key named"):
        arena.revoke_key("kaj")


@pytest.fixture
def served(arena, monkeypatch):
    """`swarmpress arena ...` client commands answered by this arena's real FastAPI app in
    this process (only the network hop is left out)."""
    from swarmpress.arena.client import ArenaClient
    from swarmpress.cli import arena as cli_arena

    app = create_app(arena)

    def client(remote):
        c = ArenaClient("http://testserver", (remote or {}).get("key"))
        c.http = TestClient(app)
        return c

    monkeypatch.setattr(cli_arena, "_client", client)
    return arena


def test_keys_commands_through_the_server(served):
    root = served.create_key("root", admin=True)
    made = cli("keys", "create", "ivy", "--json", key=root)
    assert made.returncode == 0, made.stderr
    ivy = json.loads(made.stdout)["key"]

    r = cli("keys", "list", "--json", key=root)
    assert r.returncode == 0, r.stderr
    keys = json.loads(r.stdout)
    assert [(k["name"], k["admin"], k["revoked"]) for k in keys] == [
        ("root", True, False),
        ("ivy", False, False),
    ]
    assert root not in r.stdout and ivy not in r.stdout
    table = cli("keys", "list", key=root)
    assert table.returncode == 0 and "ivy" in table.stdout and ivy not in table.stdout

    r = cli("keys", "list", key=ivy)
    assert r.returncode == 2 and "only an admin key" in r.stderr
    r = cli("keys", "revoke", "nobody", key=root)
    assert r.returncode == 2 and "no key named 'nobody'" in r.stderr
    r = cli("keys", "revoke", "ivy", "--json", key=root)
    assert r.returncode == 0 and json.loads(r.stdout) == {"name": "ivy", "revoked": 1, "keys": 1}
    r = cli("keys", "revoke", "ivy", key=root)
    assert r.returncode == 0 and "revoked already" in r.stdout
    r = cli("keys", "list", "--json", key=ivy)
    assert r.returncode == 2 and "revoked" in r.stderr


def test_a_lost_admin_key_is_replaced_through_the_database(arena):
    """`keys create --admin --home` needs no server and no key; `keys list/revoke --home`
    likewise. The new admin key works over the API, the revoked one does not."""
    lost = arena.create_key("admin", admin=True)
    db = ["--db", arena.db_url] if arena.db_url.startswith("postgresql") else []
    home = ["--home", str(arena.home), *db]
    r = cli("keys", "create", "root", "--admin", *home, "--json")
    assert r.returncode == 0, r.stderr
    fresh = json.loads(r.stdout)["key"]
    r = cli("keys", "revoke", "admin", *home, "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["revoked"] == 1, r.stderr
    r = cli("keys", "list", *home, "--json")
    listed = {k["name"]: (k["admin"], k["revoked"]) for k in json.loads(r.stdout)}
    assert listed == {"admin": (True, True), "root": (True, False)}

    client = TestClient(create_app(arena))
    make = lambda key: client.post("/api/keys", json={"name": "x"}, headers={"X-API-Key": key})  # noqa: E731
    assert make(fresh).status_code == 201
    assert make(lost).status_code == 401

    r = cli("keys", "revoke", "nobody", *home)
    assert r.returncode == 2 and "no key named" in r.stderr
    r = cli("keys", "list", "--db", "sqlite:///nowhere.db")
    assert r.returncode == 2 and "--db needs --home" in r.stderr


def test_serve_on_a_busy_port_makes_no_admin_key(arena_home):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli("serve", "--home", str(arena_home), "--port", str(port), "--workers", "0")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert f"cannot listen on 127.0.0.1:{port}" in r.stderr
    assert "sp_" not in r.stdout + r.stderr and "admin key" not in r.stdout
    arena = Arena(arena_home)
    try:
        assert not arena.has_admin() and arena.keys() == []  # the next start prints one
    finally:
        arena.Session.kw["bind"].dispose()


@pytest.mark.parametrize("port", ["70000", "65536", "-1"])
def test_serve_on_a_port_out_of_range_exits_2_and_makes_nothing(tmp_path, port):
    home = tmp_path / "home"
    r = cli("serve", "--home", str(home), "--port", port, "--workers", "0")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "--port" in r.stderr and "internal error" not in r.stderr
    assert "sp_" not in r.stdout + r.stderr and not home.exists()


def test_keys_of_a_database_from_before_revocation_stay_valid_and_can_be_revoked(arena):
    from sqlalchemy import text

    key = arena.create_key("old", admin=True)
    engine = arena.Session.kw["bind"]
    with engine.begin() as conn:  # a database made before keys could be revoked
        conn.execute(text("ALTER TABLE keys DROP COLUMN revoked"))
    engine.dispose()
    again = Arena(arena.home, arena.db_url)
    try:
        assert again.authenticate(key).name == "old" and again.has_admin()
        assert again.revoke_key("old")["revoked"] == 1
        with pytest.raises(AuthError, match="revoked"):
            again.authenticate(key)
    finally:
        again.Session.kw["bind"].dispose()
