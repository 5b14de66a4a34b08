"""A small HTTP client for the arena API (what the `swarmpress arena` commands use)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from swarmpress.errors import SwarmpressError

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

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/api/health").json()
