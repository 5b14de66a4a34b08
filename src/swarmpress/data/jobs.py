"""Named collection jobs: what to collect, how often, when to stop; state kept in the store
so a job resumes after a crash or a restart without collecting anything twice.

A job's spec (sources, path, keywords, users, label, mode, `every_s` between rounds,
`stop_after_records`, `stop_after_hours`) and state (status, pid, each source's paging
cursor, records collected, rounds, times, last error) live in a `jobs` table beside the
records. A round visits the sources in order. The cursors are saved with every committed
batch; a restarted job continues from them and the uri dedup absorbs the overlap of the
batch that was in flight. The time limit counts from the job's first start, across
restarts. SIGTERM stops a job between batches with status `stopped`; a job whose recorded
process is gone is `crashed` until resumed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import BigInteger, Column, Integer, String, Table, Text, select

from swarmpress.data.collect import collect
from swarmpress.data.records import first_error
from swarmpress.data.store import Store, meta
from swarmpress.errors import UsageError

jobs = Table(
    "jobs",
    meta,
    Column("name", String(128), primary_key=True),
    Column("spec", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("pid", Integer),
    Column("cursor", Text),
    Column("collected", BigInteger, nullable=False, default=0),
    Column("rounds", Integer, nullable=False, default=0),
    Column("started_us", BigInteger, nullable=False),
    Column("updated_us", BigInteger, nullable=False),
    Column("error", Text),
)


class JobError(UsageError, ValueError):
    """A job that cannot be defined or run as asked; the message says why."""


class JobSpec(BaseModel):
    """What a job collects and when it stops."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.-]+$")
    sources: list[Annotated[str, Field(pattern=r"^(local|reddit|x)$")]] = Field(min_length=1)
    path: str | None = None
    keywords: list[str] = Field(default_factory=list)
    users: list[str] = Field(default_factory=list)
    label: str | None = None
    mode: str = Field("any", pattern=r"^(any|all)$")
    every_s: float = Field(0.0, ge=0, description="seconds between rounds; 0: one round")
    stop_after_records: int | None = Field(None, ge=1)
    stop_after_hours: float | None = Field(None, gt=0)
    page_limit: int = Field(1000, ge=1, description="items a round reads at most (network)")
    max_bytes: int | None = Field(None, ge=1, description="the store's size cap while it runs")


def _now_us() -> int:
    return int(time.time() * 1e6)


def _alive(pid: int | None) -> bool:
    """Whether process pid runs (a zombie, killed but not yet reaped, does not)."""
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = open(f"/proc/{pid}/stat").read()  # noqa: SIM115 - one short read
    except OSError:
        return True  # no /proc here: the signal check is all there is
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def parse_spec(raw: dict[str, Any]) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as exc:
        raise JobError(f"job {raw.get('name', '?')}: {first_error(exc, 'job')}") from None


def list_jobs(store: Store) -> list[dict[str, Any]]:
    """Every job with its spec and state; a running job whose process is gone shows as
    crashed."""
    jobs.create(store.engine, checkfirst=True)
    with store.engine.connect() as conn:
        rows = conn.execute(select(jobs).order_by(jobs.c.name)).mappings().all()
    out = []
    for r in rows:
        status = r["status"]
        if status == "running" and not _alive(r["pid"]):
            status = "crashed"
        out.append({
            "name": r["name"], "status": status, "pid": r["pid"], "collected": r["collected"],
            "rounds": r["rounds"], "cursor": r["cursor"], "error": r["error"],
            "started": r["started_us"] / 1e6, "updated": r["updated_us"] / 1e6,
            "spec": json.loads(r["spec"]),
        })  # fmt: skip
    return out


def get_job(store: Store, name: str) -> dict[str, Any] | None:
    return next((j for j in list_jobs(store) if j["name"] == name), None)


def save_spec(store: Store, spec: JobSpec) -> None:
    """Define a job, or replace the spec of one that is not running."""
    old = get_job(store, spec.name)
    if old is not None and old["status"] == "running":
        raise JobError(f"job {spec.name} is running (pid {old['pid']}); stop it first")
    body = spec.model_dump_json()
    with store.engine.begin() as conn:
        if old is None:
            conn.execute(jobs.insert().values(
                name=spec.name, spec=body, status="new", collected=0, rounds=0,
                started_us=_now_us(), updated_us=_now_us(),
            ))  # fmt: skip
        else:
            conn.execute(jobs.update().where(jobs.c.name == spec.name).values(spec=body))


def _update(store: Store, name: str, **values: Any) -> None:
    with store.engine.begin() as conn:
        _update_in(conn, name, **values)


def _update_in(conn: Any, name: str, **values: Any) -> None:
    """The job row's update inside the caller's transaction."""
    conn.execute(jobs.update().where(jobs.c.name == name).values(updated_us=_now_us(),
                                                                 **values))  # fmt: skip


def stop_job(store: Store, name: str) -> bool:
    """SIGTERM a running job; False if it was not running."""
    j = get_job(store, name)
    if j is None:
        raise JobError(f"no job {name!r}")
    if j["status"] != "running":
        return False
    os.kill(j["pid"], signal.SIGTERM)
    return True


Items = Callable[[JobSpec, str, str | None], tuple[Any, Callable[[], str | None]]]


def run_job(
    store: Store,
    name: str,
    items_for: Items | None = None,
    progress: Callable[[dict], None] | None = None,
    sleep: Callable[[float], bool] | None = None,
) -> dict[str, Any]:
    """Run (or resume) a job until a stop condition, SIGTERM, or the end of its single round.

    items_for(spec, source, cursor) -> (items, a function giving that source's cursor now);
    by default the source registry's (swarmpress.data.sources.registry.job_items).
    sleep(seconds) -> False when the wait was interrupted (stop asked)."""
    if items_for is None:
        from swarmpress.data.sources.registry import job_items as items_for
    job = get_job(store, name)
    if job is None:
        raise JobError(f"no job {name!r}; define it with --source and the options first")
    if job["status"] == "running":
        raise JobError(f"job {name} is already running (pid {job['pid']})")
    spec = parse_spec(job["spec"])
    if spec.max_bytes is not None:
        store.max_bytes = spec.max_bytes
    stop = threading.Event()
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    wait = sleep or (lambda s: not stop.wait(s))
    resumed = job["status"] in ("crashed", "stopped", "failed") and job["collected"] > 0
    collected, rounds = job["collected"], job["rounds"]
    cursors: dict[str, str | None] = json.loads(job["cursor"] or "{}")
    with store.engine.begin() as conn:  # claim it: two starters cannot both run it
        claimed = conn.execute(
            jobs.update()
            .where(jobs.c.name == name)
            .where((jobs.c.status != "running") | (jobs.c.pid == job["pid"]))  # a dead one's
            .values(status="running", pid=os.getpid(), error=None, updated_us=_now_us(),
                    **({"started_us": _now_us()} if job["status"] == "new" else {}))
        ).rowcount  # fmt: skip
    if claimed != 1:
        raise JobError(f"job {name} was started by another process meanwhile")
    if job["status"] == "new":
        job["started"] = time.time()
    deadline = None
    if spec.stop_after_hours:
        deadline = job["started"] + spec.stop_after_hours * 3600
    status, error = "done", None
    try:
        while not stop.is_set():
            ended = False
            for source in spec.sources:
                if source in cursors.get("_done", []):
                    continue  # finished earlier in this round (before a restart)
                items, cursor_now = items_for(spec, source, cursors.get(source))
                want = None
                if spec.stop_after_records:
                    want = max(0, spec.stop_after_records - collected)
                # local files are read to the end each round (no cursor to come back to)
                page = None if source == "local" else spec.page_limit
                budget = want if page is None else page if want is None else min(page, want)

                def counted(
                    conn: Any,
                    stats: dict,
                    _c=cursor_now,
                    _base=collected,
                    _s=source,
                    _cur=cursors,
                ) -> None:  # in the batch's transaction: the counter commits with the records
                    _update_in(conn, name, cursor=json.dumps(_cur | {_s: _c()}),
                               collected=_base + stats["inserted"])  # fmt: skip

                def flushed(
                    stats: dict, _c=cursor_now, _base=collected, _s=source, _cur=cursors
                ) -> None:
                    _cur[_s] = _c()
                    total = _base + stats["inserted"]
                    if progress is not None:
                        progress(stats | {"job": name, "collected": total})
                    if stop.is_set() or (deadline is not None and time.time() >= deadline):
                        raise _Stop

                try:
                    stats = collect(store, items, source, limit=budget, progress=flushed,
                                    in_batch=counted)  # fmt: skip
                    collected += stats["inserted"]
                except _Stop:
                    collected = get_job(store, name)["collected"]
                    status = "stopped" if stop.is_set() else "done"
                    ended = True
                    break
                cursors[source] = None
                cursors["_done"] = [*cursors.get("_done", []), source]
                _update(store, name, collected=collected, cursor=json.dumps(cursors))
                if spec.stop_after_records and collected >= spec.stop_after_records:
                    break
            if ended:
                break
            rounds += 1
            cursors = {}  # a new round starts from the newest again; dedup skips the seen
            _update(store, name, collected=collected, rounds=rounds, cursor=None)
            if spec.stop_after_records and collected >= spec.stop_after_records:
                break
            if deadline is not None and time.time() >= deadline:
                break
            if spec.every_s <= 0:
                break
            if not wait(spec.every_s):
                status = "stopped"
                break
        else:
            status = "stopped"
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"[:500]
        raise
    finally:
        _update(store, name, status=status, pid=None, error=error)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    return {"job": name, "status": status, "collected": collected, "rounds": rounds,
            "resumed": resumed}  # fmt: skip


class _Stop(Exception):
    """Raised from the progress callback to end a round between batches."""


LOG_DIR = "~/.swarmpress/jobs"
_DETACHED = "import sys; from swarmpress.data.jobs import main; sys.exit(main(sys.argv[1:]))"


def start_detached(store: Store, name: str, log_dir: str | Path = LOG_DIR) -> dict[str, Any]:
    """Run a defined job in a process of its own, detached from this one's session.

    Its progress (a JSON line per committed batch) and its result go to LOG_DIR/NAME.log;
    its state to the store, as for any job (`list_jobs`). The store's URL travels in the
    environment, so a password never shows in `ps`. Returns {job, pid, log}."""
    if get_job(store, name) is None:
        raise JobError(f"no job {name!r}; define it first")
    logdir = Path(log_dir).expanduser()
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    env = dict(os.environ, SWARMPRESS_DATA_STORE=store.url)
    with open(log, "ab") as fh:
        p = subprocess.Popen([sys.executable, "-c", _DETACHED, name], stdout=fh,
                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, env=env)  # fmt: skip
    return {"job": name, "pid": p.pid, "log": str(log)}


def main(argv: list[str]) -> int:
    """A detached job's process: `start_detached` runs this with the job's name (the store
    from env SWARMPRESS_DATA_STORE); a JSON line per batch on stderr, the result on stdout."""

    def log_line(s: dict) -> None:
        line = {k: s[k] for k in ("collected", "read", "duplicates", "skipped")}
        print(json.dumps({"job": s["job"], "time": time.time(), **line}),
              file=sys.stderr, flush=True)  # fmt: skip

    from swarmpress.errors import SwarmpressError

    try:
        result = run_job(Store(None), argv[0], progress=log_line)
    except (JobError, SwarmpressError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    print(json.dumps(result), flush=True)
    return 0
