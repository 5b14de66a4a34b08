"""The arena's HTTP API (FastAPI; the schema is served at /openapi.json) and dashboard.

Every route is a thin wrapper over service.Arena; refusals come back as
`{"error": "..."}` with the status the service names (400, 401, 403, 404, 413, 422, 429).
Keys travel in the `X-API-Key` header.

An upload is checked before its body is read: the key first (401), then the declared
length against the largest competition's file cap plus room for the form (413). The
multipart form is then parsed here, in memory, from the request stream with the same cap
(so a body without a Content-Length is cut off too): FastAPI's own File/Form parameters
would parse and spool the whole body to disk before any of this could run.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from swarmpress import __version__
from swarmpress.arena.pool import PoolError
from swarmpress.arena.service import Arena, ArenaError, AuthError, Forbidden, Invalid, TooLarge
from swarmpress.arena.validate import SolutionError

WEB = Path(__file__).with_name("web")
KeyHeader = Annotated[str | None, Header(alias="X-API-Key")]
FORM_OVERHEAD = 16 << 10  # room in an upload for boundaries, part headers and small fields
FIELD_BYTES = 1024  # the competition and fork fields, at most
FORM_PARTS = 8
SUBMISSION_FORM = {  # the upload's form, for the schema (the route parses it itself)
    "type": "object",
    "title": "SubmissionForm",
    "required": ["file", "competition"],
    "properties": {
        "file": {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/octet-stream",
            "description": "the solution .py file (at most the competition's max_file_bytes)",
        },
        "competition": {"type": "string", "description": "competition name"},
        "fork": {
            "anyOf": [{"type": "integer"}, {"type": "null"}],
            "description": "id of the submission this one forks",
        },
    },
}


def upload_cap(arena: Arena) -> int:
    """The most bytes an upload body may have: the largest file cap plus the form's room."""
    return max(c.max_file_bytes for c in arena.config.competition) + FORM_OVERHEAD


async def read_form(request: Request, cap: int) -> dict[str, tuple[str | None, bytes]]:
    """The parts of a multipart/form-data body as {name: (filename, data)}, read from the
    stream in memory and refused (413) once the body passes cap bytes, declared or not."""
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise ArenaError(
            "an upload must be multipart/form-data with the fields file, competition and fork"
        )
    parts: dict[str, tuple[str | None, bytes]] = {}
    current: dict[str, Any] = {}

    def on_part_begin() -> None:
        current.update(headers={}, field=b"", value=b"", data=bytearray())

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] += data[start:end]

    def on_header_end() -> None:
        current["headers"][current["field"].lower()] = current["value"]
        current["field"], current["value"] = b"", b""

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] += data[start:end]

    def on_part_end() -> None:
        disp, opts = parse_options_header(current["headers"].get(b"content-disposition", b""))
        name = opts.get(b"name", b"").decode("utf-8", "replace")
        if disp != b"form-data" or not name:
            raise ArenaError("every part of the upload form needs a Content-Disposition name")
        if name in parts or len(parts) >= FORM_PARTS:
            raise ArenaError(f"the upload form repeats {name!r} or has too many parts")
        filename = opts.get(b"filename")
        parts[name] = (
            filename.decode("utf-8", "replace") if filename is not None else None,
            bytes(current["data"]),
        )

    callbacks = dict(on_part_begin=on_part_begin, on_header_field=on_header_field,
                     on_header_value=on_header_value, on_header_end=on_header_end,
                     on_part_data=on_part_data, on_part_end=on_part_end)  # fmt: skip
    parser = MultipartParser(params[b"boundary"], callbacks)
    seen = 0
    try:
        async for chunk in request.stream():
            seen += len(chunk)
            if seen > cap:
                raise TooLarge(f"the upload passed {cap} bytes; {_cap_words(cap)}")
            parser.write(chunk)
        parser.finalize()
    except MultipartParseError as exc:
        raise ArenaError(f"the upload is not a valid multipart form: {exc}") from None
    return parts


def _cap_words(cap: int) -> str:
    return f"a solution may have at most {cap - FORM_OVERHEAD} bytes"


def _field(parts: dict[str, tuple[str | None, bytes]], name: str) -> str | None:
    """A small text field of the form (None when absent)."""
    if name not in parts:
        return None
    data = parts[name][1]
    if len(data) > FIELD_BYTES:
        raise ArenaError(f"the form field {name!r} is longer than {FIELD_BYTES} bytes")
    try:
        return data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ArenaError(f"the form field {name!r} is not UTF-8 text") from None


class KeyRequest(BaseModel):
    name: str
    admin: bool = False


class RevokeRequest(BaseModel):
    name: str


def listen(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening, for the server to take over
    (uvicorn.Server.run(sockets=...)); OSError when the port is in use or the address is
    not this machine's. `serve` binds first, so nothing is made or printed for a server
    that cannot start."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except BaseException:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def create_app(arena: Arena) -> FastAPI:
    """The API and dashboard of one arena."""
    app = FastAPI(
        title="swarmpress arena",
        version=__version__,
        description="Open compression competitions: submit Apex-compatible solutions, "
        "see them scored in a sandbox on held-out tensors, fork the best.",
    )

    @app.exception_handler(AuthError)  # swarmpress.errors' one AuthError (status 401)
    @app.exception_handler(ArenaError)
    def _arena_error(request: Request, exc: ArenaError | AuthError) -> JSONResponse:
        # an upload refused unread (no key, too large): close the connection rather than
        # let the server drain a body nobody wants
        unread = request.method == "POST" and exc.status in (401, 413)
        headers = {"Connection": "close"} if unread else None
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(SolutionError)
    def _solution_error(_: Request, exc: SolutionError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.exception_handler(PoolError)
    def _pool_error(_: Request, exc: PoolError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=404)

    @app.get("/api/health", tags=["meta"])
    def health() -> dict[str, Any]:
        """Liveness plus the queue depth by state."""
        return {"ok": True, "version": __version__, "queue": arena.queue_depth()}

    @app.get("/api/competitions", tags=["competitions"])
    def competitions() -> list[dict[str, Any]]:
        """Every competition with its rules, entry count, leader and public sample."""
        return arena.competitions()

    @app.get("/api/competitions/{name}/leaderboard", tags=["competitions"])
    def leaderboard(name: str) -> list[dict[str, Any]]:
        """Scored submissions, best first; `leader` marks the standing top."""
        arena.competition(name)
        return arena.leaderboard(name)

    @app.get("/api/competitions/{name}/staircase", tags=["competitions"])
    def staircase(name: str) -> list[dict[str, Any]]:
        """Every change of leader (time, submission, score): the staircase chart's data."""
        arena.competition(name)
        return arena.staircase(name)

    @app.get("/api/competitions/{name}/sample/{tensor}", tags=["competitions"])
    def sample(name: str, tensor: str) -> Response:
        """A public-sample tensor as raw flat bf16 bytes (the held-out pool is never served)."""
        arena.competition(name)
        entry = arena.pool.public_entry(tensor)
        return Response(arena.pool.read(entry), media_type="application/octet-stream")

    @app.post(
        "/api/submissions",
        status_code=201,
        tags=["submissions"],
        responses={
            400: {"description": "not a solution, or a malformed form"},
            401: {"description": "no or unknown API key (the body is not read)"},
            404: {"description": "no such competition, or no such submission to fork"},
            413: {"description": "the upload is larger than the file cap plus the form"},
            422: {"description": "fork is not an integer"},
            429: {"description": "the key's daily limit for the competition is used up"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"multipart/form-data": {"schema": SUBMISSION_FORM}},
            }
        },
    )
    async def submit(request: Request, x_api_key: KeyHeader = None) -> dict[str, int]:
        """Upload a solution (multipart form: file, competition, fork); it is queued for
        evaluation. Returns its id. Refused before the body is read without a valid key
        (401) or with a Content-Length above the largest file cap plus the form (413)."""
        await run_in_threadpool(arena.authenticate, x_api_key)
        cap = upload_cap(arena)
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ArenaError(f"Content-Length {length[:40]!r} is not a number of bytes")
            if int(length) > cap:
                raise TooLarge(f"the upload is {int(length)} bytes; {_cap_words(cap)}")
        parts = await read_form(request, cap)
        competition = _field(parts, "competition")
        if not competition:
            raise ArenaError("the upload form needs a competition field (its name)")
        if "file" not in parts:
            raise ArenaError("the upload form needs a file field (the solution .py file)")
        fork_text = _field(parts, "fork")
        fork = None
        if fork_text:
            try:
                fork = int(fork_text)
            except ValueError:
                raise Invalid(f"fork must be a submission id (an integer), not "
                              f"{fork_text[:40]!r}") from None  # fmt: skip
        filename, code = parts["file"]
        sid = await run_in_threadpool(
            arena.submit, x_api_key, competition, filename or "solution.py", code, fork
        )
        return {"id": sid}

    @app.get("/api/competitions/{name}/submissions", tags=["competitions"])
    def recent(name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The latest submissions in every state (failed ones too), newest first; `error` is
        a category, never the detailed reason."""
        arena.competition(name)
        return arena.recent(name, limit)

    @app.get("/api/submissions/{sid}", tags=["submissions"])
    def status(sid: int, x_api_key: KeyHeader = None) -> dict[str, Any]:
        """State, score, per-tensor results with failure reasons. Until the reveal, only the
        author and admins (by key) see the detailed reasons, error and log; others see each
        failure's category (`detailed` says which)."""
        return arena.status(sid, viewer=x_api_key)

    @app.get("/api/submissions/{sid}/code", tags=["submissions"])
    def code(sid: int, x_api_key: KeyHeader = None) -> Response:
        """The solution file, after its reveal delay (or to its author)."""
        name, data = arena.download(sid, viewer=x_api_key)
        return Response(
            data,
            media_type="text/x-python",
            headers={"Content-Disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/api/submissions/{sid}/lineage", tags=["submissions"])
    def lineage(sid: int) -> dict[str, Any]:
        """Ancestors (root first) and the tree of forks below a submission."""
        return arena.lineage(sid)

    def _admin(x_api_key: str | None, what: str) -> None:
        if not arena.authenticate(x_api_key).admin:
            raise Forbidden(f"only an admin key can {what}")

    @app.post("/api/keys", status_code=201, tags=["keys"])
    def create_key(req: KeyRequest, x_api_key: KeyHeader = None) -> dict[str, str]:
        """Make an API key (admin key required). The key is shown once."""
        _admin(x_api_key, "create keys")
        return {"name": req.name, "key": arena.create_key(req.name, req.admin)}

    @app.get("/api/keys", tags=["keys"])
    def list_keys(x_api_key: KeyHeader = None) -> list[dict[str, Any]]:
        """Every key: name, created, admin or not, revoked or not (admin key required).
        Never a key itself."""
        _admin(x_api_key, "list keys")
        return arena.keys()

    @app.post("/api/keys/revoke", tags=["keys"])
    def revoke_key(req: RevokeRequest, x_api_key: KeyHeader = None) -> dict[str, Any]:
        """Revoke every key of a name (admin key required); the API refuses them from then
        on (401). 404 when no key has that name."""
        _admin(x_api_key, "revoke keys")
        return arena.revoke_key(req.name)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/submissions/{sid}", include_in_schema=False)
    def submission_page(sid: int) -> FileResponse:
        return FileResponse(WEB / "submission.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app
