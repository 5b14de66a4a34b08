"""The arena's HTTP API (FastAPI; the schema is served at /openapi.json) and dashboard.

Every route is a thin wrapper over service.Arena; refusals come back as
`{"error": "..."}` with the status the service names (400, 401, 403, 404, 429).
Keys travel in the `X-API-Key` header.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Header, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from swarmpress import __version__
from swarmpress.arena.pool import PoolError
from swarmpress.arena.service import Arena, ArenaError, Forbidden
from swarmpress.arena.validate import SolutionError

WEB = Path(__file__).with_name("web")
KeyHeader = Annotated[str | None, Header(alias="X-API-Key")]


class KeyRequest(BaseModel):
    name: str
    admin: bool = False


def create_app(arena: Arena) -> FastAPI:
    """The API and dashboard of one arena."""
    app = FastAPI(
        title="swarmpress arena",
        version=__version__,
        description="Open compression competitions: submit Apex-compatible solutions, "
        "see them scored in a sandbox on held-out tensors, fork the best.",
    )

    @app.exception_handler(ArenaError)
    def _arena_error(_: Request, exc: ArenaError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)

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

    @app.post("/api/submissions", status_code=201, tags=["submissions"])
    def submit(
        file: Annotated[UploadFile, File(description="the solution .py file")],
        competition: Annotated[str, Form()],
        fork: Annotated[int | None, Form()] = None,
        x_api_key: KeyHeader = None,
    ) -> dict[str, int]:
        """Upload a solution; it is queued for evaluation. Returns its id."""
        code = file.file.read(1 << 20)
        sid = arena.submit(x_api_key, competition, file.filename or "solution.py", code, fork)
        return {"id": sid}

    @app.get("/api/submissions/{sid}", tags=["submissions"])
    def status(sid: int, x_api_key: KeyHeader = None) -> dict[str, Any]:
        """State, score, per-tensor results (with failure reasons); the log once revealed."""
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

    @app.post("/api/keys", status_code=201, tags=["keys"])
    def create_key(req: KeyRequest, x_api_key: KeyHeader = None) -> dict[str, str]:
        """Make an API key (admin key required). The key is shown once."""
        caller = arena.authenticate(x_api_key)
        if not caller.admin:
            raise Forbidden("only an admin key can create keys")
        return {"name": req.name, "key": arena.create_key(req.name, req.admin)}

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(WEB / "index.html")

    @app.get("/submissions/{sid}", include_in_schema=False)
    def submission_page(sid: int) -> FileResponse:
        return FileResponse(WEB / "submission.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")
    return app
