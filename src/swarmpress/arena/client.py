"""A small HTTP client for the arena API (what the `swarmpress arena` commands use)."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

import httpx

from swarmpress.errors import SwarmpressError, UsageError

DEFAULT_URL = "http://127.0.0.1:8765"


class ClientError(SwarmpressError, RuntimeError):
    """The server refused a request or could not be reached; the message says which."""

    exit_code = 2  # the CLI's usage code: a refused request or a server that is not there

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ArenaClient:
    """Talk to one arena server with one API key (both optional, from the environment)."""

    def __init__(self, server: str | None = None, key: str | None = None, timeout: float = 30):
        self.server = (server or os.environ.get("SWARMPRESS_ARENA_URL") or DEFAULT_URL).rstrip("/")
        self.key = key or os.environ.get("SWARMPRESS_ARENA_KEY")
        self.http = httpx.Client(base_url=self.server, timeout=timeout)

    def _call(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {"X-API-Key": self.key} if self.key else {}
        try:
            r = self.http.request(method, path, headers=headers, **kw)
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the arena at {self.server}: {exc}") from None
        if r.status_code >= 400:
            try:
                msg = r.json().get("error") or r.json().get("detail")
            except ValueError:
                msg = r.text[:200]
            raise ClientError(f"{msg} (HTTP {r.status_code})", r.status_code)
        return r

    def submit(self, path: str | Path, competition: str, fork: int | None = None) -> int:
        """Upload a solution file; its id. A file over the competition's cap is refused here,
        before it is sent."""
        path = Path(path)
        try:
            code = path.read_bytes()
        except OSError as exc:
            raise ClientError(f"cannot read {path}: {exc.strerror or exc}") from None
        cap = next((c["max_file_bytes"] for c in self.competitions() if c["name"] == competition),
                   None)  # fmt: skip
        if cap is not None and len(code) > cap:  # the server would refuse it unread
            raise ClientError(
                f"{path} is {len(code)} bytes; competition {competition} takes at most {cap}"
            )
        data = {"competition": competition}
        if fork is not None:
            data["fork"] = str(fork)
        r = self._call("POST", "/api/submissions", files={"file": (path.name, code)}, data=data)
        return int(r.json()["id"])

    def status(self, sid: int) -> dict[str, Any]:
        return self._call("GET", f"/api/submissions/{sid}").json()

    def leaderboard(self, competition: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/competitions/{competition}/leaderboard").json()

    def staircase(self, competition: str) -> list[dict[str, Any]]:
        return self._call("GET", f"/api/competitions/{competition}/staircase").json()

    def competitions(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/competitions").json()

    def download(self, sid: int) -> tuple[str, bytes]:
        r = self._call("GET", f"/api/submissions/{sid}/code")
        disp = r.headers.get("content-disposition", "")
        name = disp.split('filename="')[-1].rstrip('"') if "filename=" in disp else f"{sid}.py"
        return name, r.content

    def lineage(self, sid: int) -> dict[str, Any]:
        return self._call("GET", f"/api/submissions/{sid}/lineage").json()

    def create_key(self, name: str, admin: bool = False) -> str:
        return self._call("POST", "/api/keys", json={"name": name, "admin": admin}).json()["key"]

    def keys(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/keys").json()

    def revoke_key(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/api/keys/revoke", json={"name": name}).json()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/api/health").json()


def _kind(mode: int) -> str:
    for test, word in ((stat.S_ISDIR, "a directory"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):  # fmt: skip
        if test(mode):
            return word
    return "not a regular file"


def check_target(path: Path, force: bool) -> None:
    """Refuse to write path when it exists (unless force) or is not a regular file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is {_kind(st.st_mode)}, not a regular file; name a file to "
                         "write (not even --force replaces it)")  # fmt: skip
    if not force:
        raise UsageError(f"{path} exists; pass --force to replace it")


def save_file(path: str | Path, data: bytes, force: bool = False) -> Path:
    """Write data to a new file path (what `arena download` does with what it fetched).

    An existing path is refused unless force, and even with force only a regular file is
    replaced, never a directory, link, FIFO, device or socket (UsageError, exit 2). The
    bytes go to a temporary file beside path, renamed into place once complete, so a
    failed write leaves no half-written file and the old one, if any, as it was; without
    force the rename cannot replace a file that appeared meanwhile."""
    path = Path(path)
    check_target(path, force)
    if not path.parent.is_dir():
        raise UsageError(f"{path.parent}: no such directory")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what a plain open() would have made
        check_target(path, force)
        if force:
            os.replace(tmp, path)
        else:
            _link_new(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _link_new(tmp: str, path: Path) -> None:
    """Give tmp the name path only if path does not exist (a hard link fails then)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise UsageError(f"{path} exists; pass --force to replace it") from None
    except OSError as exc:  # a file system without hard links: checked a moment ago
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
            raise
        os.replace(tmp, path)
        return
    os.unlink(tmp)
