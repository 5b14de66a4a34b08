"""`swarmpress arena download`: never replaces a file without --force, never anything but a
regular file, and never leaves a half-written one."""

import errno
import json
import os

import pytest
from fastapi.testclient import TestClient

from swarmpress.arena.api import create_app
from tests.arena.conftest import solution
from tests.arena.helpers import cli

OLD = b"# my own work, not to be lost\n"


@pytest.fixture
def entry(arena_home, monkeypatch):
    """(key, id) of a submission (its author may download it at once), with the client
    commands answered by the arena's real FastAPI app in this process."""
    from swarmpress.arena.client import ArenaClient
    from swarmpress.arena.service import Arena
    from swarmpress.cli import arena as cli_arena

    arena = Arena(arena_home)  # SQLite: nothing here depends on the database
    app = create_app(arena)

    def client(remote):
        c = ArenaClient("http://testserver", (remote or {}).get("key"))
        c.http = TestClient(app)
        return c

    monkeypatch.setattr(cli_arena, "_client", client)
    key = arena.create_key("ada")
    yield key, arena.submit(key, "lossless", "zstd.py", solution("zstd"))
    arena.Session.kw["bind"].dispose()


@pytest.fixture
def out_dir(tmp_path):
    """A folder of its own for what the tests write (tmp_path holds the arena home)."""
    d = tmp_path / "out"
    d.mkdir()
    return d


def test_an_existing_file_is_kept_without_force_and_replaced_with_it(entry, out_dir):
    key, sid = entry
    out = out_dir / "mine.py"
    out.write_bytes(OLD)
    r = cli("download", str(sid), "--out", str(out), key=key)
    assert r.returncode == 2 and f"{out} exists; pass --force" in r.stderr
    assert out.read_bytes() == OLD
    r = cli("download", str(sid), "--out", str(out), "--force", "--json", key=key)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == {"id": sid, "path": str(out), "bytes": len(solution("zstd"))}
    assert out.read_bytes() == solution("zstd")
    assert sorted(p.name for p in out_dir.iterdir()) == ["mine.py"]  # no temporary left


def test_the_default_name_is_not_overwritten_either(entry, out_dir, monkeypatch):
    key, sid = entry
    monkeypatch.chdir(out_dir)
    r = cli("download", str(sid), key=key)
    assert r.returncode == 0 and (out_dir / "zstd.py").read_bytes() == solution("zstd")
    (out_dir / "zstd.py").write_bytes(OLD)
    r = cli("download", str(sid), key=key)
    assert r.returncode == 2 and "zstd.py exists; pass --force" in r.stderr
    assert (out_dir / "zstd.py").read_bytes() == OLD


def test_only_a_regular_file_is_ever_replaced(entry, out_dir):
    key, sid = entry
    (out_dir / "dir.py").mkdir()
    os.mkfifo(out_dir / "fifo.py")  # a plain open() for writing would block here
    target = out_dir / "target.py"
    target.write_bytes(OLD)
    (out_dir / "link.py").symlink_to(target)
    refused = (("dir.py", "a directory"), ("fifo.py", "a FIFO"), ("link.py", "a symbolic link"),
               ("/dev/null", "a character device"))  # fmt: skip
    for name, kind in refused:
        out = out_dir / name
        for force in ([], ["--force"]):
            r = cli("download", str(sid), "--out", str(out), *force, key=key)
            assert r.returncode == 2, (name, force, r.stderr)
            assert f"is {kind}, not a regular file" in r.stderr
    assert (out_dir / "dir.py").is_dir() and not any((out_dir / "dir.py").iterdir())
    assert target.read_bytes() == OLD and (out_dir / "link.py").is_symlink()


def test_a_failed_download_or_write_leaves_nothing_half_written(entry, out_dir, monkeypatch):
    key, sid = entry
    out = out_dir / "mine.py"
    out.write_bytes(OLD)
    r = cli("download", str(sid), "--out", str(out), "--force", key="sp_someone_else")
    assert r.returncode == 2 and out.read_bytes() == OLD  # refused by the server

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the disk fills while the file is written
    r = cli("download", str(sid), "--out", str(out), "--force", key=key)
    assert r.returncode == 2 and "No space left on device" in r.stderr
    assert out.read_bytes() == OLD
    r = cli("download", str(sid), "--out", str(out_dir / "new.py"), key=key)
    assert r.returncode == 2 and not (out_dir / "new.py").exists()
    assert sorted(p.name for p in out_dir.iterdir()) == ["mine.py"]  # no temporary left


def test_an_out_ending_in_a_separator_is_a_folder_that_must_exist(entry, out_dir):
    """pathlib drops the trailing `/`: `--out newdir/` must never become a file `newdir`."""
    key, sid = entry
    for missing in ("newdir/", "deeper/newdir/"):
        r = cli("download", str(sid), "--out", f"{out_dir}/{missing}", key=key)
        assert r.returncode == 2, r.stderr
        assert "no such directory" in r.stderr and "Traceback" not in r.stderr
    (out_dir / "file.py").write_bytes(OLD)
    r = cli("download", str(sid), "--out", f"{out_dir / 'file.py'}/", key=key)
    assert r.returncode == 2 and "not a directory" in r.stderr
    assert sorted(p.name for p in out_dir.iterdir()) == ["file.py"]  # nothing made
    (out_dir / "dir").mkdir()
    r = cli("download", str(sid), "--out", f"{out_dir / 'dir'}/", "--json", key=key)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["path"] == str(out_dir / "dir" / "zstd.py")
    assert (out_dir / "dir" / "zstd.py").read_bytes() == solution("zstd")
    r = cli("download", str(sid), "--out", f"{out_dir / 'dir'}/", key=key)  # no --force
    assert r.returncode == 2 and "zstd.py exists; pass --force" in r.stderr
    r = cli("download", str(sid), "--out", str(out_dir / "dir"), key=key)  # no slash: a file
    assert r.returncode == 2 and "is a directory, not a regular file" in r.stderr
