"""The arena's rules as a library: keys, submissions, rate limits, results, the leader,
reveal and lineage. The HTTP API, the CLI and the workers all go through this class.

An arena home directory holds `arena.toml` (the competitions), `pool/` (held-out tensors
and the public sample) and, unless a database URL is given, `arena.db` (SQLite).

Until a submission is revealed, only its author and admins see its detailed failure
reasons, error and log: a solution can print whatever it read (held-out tensors included)
into an exception message, so everyone else sees the failure only as a category from a
fixed vocabulary (`failure_category`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from swarmpress.arena import jobqueue
from swarmpress.arena.config import (
    ArenaConfig,
    Competition,
    default_config,
    dump_config,
    load_config,
)
from swarmpress.arena.db import CompetitionRow, Job, Key, Leader, Result, Submission, now, open_db
from swarmpress.arena.evaluate import RoundResult, TensorResult
from swarmpress.arena.pool import DEFAULT_SEQ_LEN, DEFAULT_SEQUENCES, Pool, build_pool
from swarmpress.arena.validate import SolutionError, inspect_solution
from swarmpress.errors import AuthError, UsageError

CONFIG, POOL, DB = "arena.toml", "pool", "arena.db"
DAY = 86_400.0
REASON_CHARS = 500  # a stored failure reason or error keeps at most this many characters
LOG_CHARS = 64 << 10  # a stored log keeps its last 64 Ki characters
# Before the reveal an author sees only the last lines of their own log: every entry of a
# round gets the same held-out tensors, so a full log would let an author dump them with
# one entry and tune the next; after the reveal the whole log is public.
AUTHOR_LOG_CHARS = 2000
MAX_ID = 2**31 - 1  # ids are INTEGER columns: 32-bit on PostgreSQL
KEY_NAME_CHARS = 64


class ArenaError(UsageError):
    """A request the arena refuses; status is the HTTP status it maps to."""

    status = 400


class Forbidden(ArenaError):
    status = 403


class NotFound(ArenaError):
    status = 404


class Invalid(ArenaError):
    """A request field that is not what it must be (e.g. a fork id that is not a number)."""

    status = 422


class TooLarge(ArenaError):
    status = 413


class RateLimited(ArenaError):
    status = 429


def clean_text(value: object, limit: int, keep_end: bool = False) -> str:
    """Text from a submission made safe to store on SQLite and PostgreSQL: valid UTF-8 (lone
    surrogates and undecodable bytes become U+FFFD), no NUL bytes (PostgreSQL refuses them),
    at most limit characters (the first ones, or with keep_end the last ones, as for a log)."""
    if isinstance(value, bytes):
        s = value.decode("utf-8", "replace")
    else:
        s = str(value).encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    s = s.replace("\x00", "\ufffd")
    if len(s) <= limit:
        return s
    return "…" + s[-(limit - 1) :] if keep_end else s[: limit - 1] + "…"


def _finite(x: float | None) -> float | None:
    """x as a float, or None when it is missing, NaN or infinite (which JSON cannot carry)."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def failure_category(ok: bool, reason: str, track: str) -> str:
    """Why a tensor failed, in a fixed vocabulary that carries no text of the submission:
    "compress failed", "decompress failed", "timed out", "wrong output", "similarity below
    threshold", "router failed", "task failed" or "failed" ("" when it did not fail).

    The words come from the prefixes that the evaluator writes itself (evaluate.py and the
    sandbox); whatever a solution put into an exception comes after them and is never
    looked at, so it cannot choose its category by its message."""
    if ok:
        return ""
    if track == "routing":
        return "router failed" if reason.startswith("router ") else "task failed"
    stage, _, rest = reason.partition(" ")
    if stage in ("compress", "decompress"):
        if rest.startswith(("timed out", "did not load")):
            return "timed out"
        if stage == "decompress" and rest.startswith("gave "):
            return "wrong output"
        return f"{stage} failed"
    if stage == "decompressed":
        return "wrong output"
    if stage == "similarity":
        return "similarity below threshold"
    return "failed"


def safe_filename(name: str) -> str:
    """A submitted file's name made safe to store, serve and write: its last component,
    ASCII letters, digits, '.', '_' and '-' only, at most 100 characters."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name)[:100].lstrip(".")
    return base or "solution.py"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def init_home(
    home: str | Path,
    corpus_dir: str | Path | None = None,
    config: ArenaConfig | None = None,
    *,
    text: str | Path | None = None,
    sequences: int = DEFAULT_SEQUENCES,
    seq_len: int = DEFAULT_SEQ_LEN,
) -> bool:
    """Create an arena home (default: the embedded competitions); False if it exists.

    The pool gets a fresh random secret (pool/secret, 0600), which draws its held-out
    tensors (MiniLM on secret-chosen text: pydoc_data.topics, or `text`) and its rounds,
    so no two arenas share a pool and nobody can rebuild one; `corpus_dir` cuts it from a
    private corpus instead. Raises PoolError when the pool cannot be built.
    """
    home = Path(home)
    if (home / CONFIG).exists():
        return False
    home.mkdir(parents=True, exist_ok=True)
    build_pool(home / POOL, corpus_dir=corpus_dir, text=text, sequences=sequences,
               seq_len=seq_len)  # fmt: skip
    (home / CONFIG).write_text(dump_config(config or default_config()))
    return True


class Arena:
    """One arena: its config, pool and database."""

    def __init__(self, home: str | Path, db_url: str | None = None) -> None:
        self.home = Path(home)
        self.config: ArenaConfig = load_config(self.home / CONFIG)
        self.pool = Pool(self.home / POOL)
        self.db_url = db_url or f"sqlite:///{(self.home / DB).absolute()}"
        self.Session = open_db(self.db_url)
        self._sync_competitions()

    # ------------------------------------------------------------------ setup
    def _sync_competitions(self) -> None:
        with self.Session() as s:
            for c in self.config.competition:
                row = s.scalar(select(CompetitionRow).where(CompetitionRow.name == c.name))
                if row is None:
                    s.add(
                        CompetitionRow(name=c.name, track=c.track, config_json=c.model_dump_json())
                    )
                else:
                    row.track, row.config_json = c.track, c.model_dump_json()
            s.commit()

    def competition(self, name: str) -> Competition:
        try:
            return self.config.get(name)
        except ValueError as exc:
            raise NotFound(str(exc)) from None

    def _competition_row(self, s, name: str) -> CompetitionRow:
        row = s.scalar(select(CompetitionRow).where(CompetitionRow.name == name))
        if row is None:
            raise NotFound(f"no competition named {name!r}")
        return row

    def create_key(self, name: str, admin: bool = False) -> str:
        """A new API key for name (shown once; only its hash is stored). The name is shown
        on leaderboards, so it must be 1 to 64 printable characters."""
        name = name.strip() if isinstance(name, str) else ""
        if not (0 < len(name) <= KEY_NAME_CHARS and name.isprintable()):
            raise ArenaError(
                f"a key name must be 1 to {KEY_NAME_CHARS} printable characters "
                f"(no control characters); got {len(name)} characters"
            )
        key = "sp_" + secrets.token_urlsafe(24)
        with self.Session() as s:
            s.add(Key(name=name, key_hash=hash_key(key), admin=admin))
            s.commit()
        return key

    def has_admin(self) -> bool:
        """Whether some admin key is valid (not revoked)."""
        with self.Session() as s:
            admins = select(func.count()).select_from(Key)
            return s.scalar(admins.where(Key.admin, Key.revoked.is_(None))) > 0

    def keys(self) -> list[dict[str, Any]]:
        """Every key, oldest first: its name, when it was made, whether it is an admin's and
        whether (and when) it was revoked. Never the key, nor its hash."""
        with self.Session() as s:
            rows = s.scalars(select(Key).order_by(Key.id)).all()
        return [{"id": k.id, "name": k.name, "admin": bool(k.admin), "created": k.created,
                 "revoked": k.revoked is not None, "revoked_at": k.revoked}
                for k in rows]  # fmt: skip

    def revoke_key(self, name: str) -> dict[str, Any]:
        """Revoke every valid key named name: the API refuses them from now on. Returns
        {"name", "revoked": keys revoked now, "keys": keys of that name in all}; NotFound
        when no key has that name. Revoking a revoked key again changes nothing."""
        name = name.strip() if isinstance(name, str) else ""  # as create_key stores it
        with self.Session() as s:
            rows = s.scalars(select(Key).where(Key.name == name).with_for_update()).all()
            if not rows:
                raise NotFound(f"no key named {name!r} (swarmpress arena keys list shows them)")
            fresh = [k for k in rows if k.revoked is None]
            t = now()
            for k in fresh:
                k.revoked = t
            s.commit()
        return {"name": name, "revoked": len(fresh), "keys": len(rows)}

    def authenticate(self, key: str | None) -> Key:
        """The valid key row for key; AuthError (401) when it is missing, unknown or
        revoked."""
        if not key:
            raise AuthError("an API key is required (--key or SWARMPRESS_ARENA_KEY)")
        with self.Session() as s:
            row = s.scalar(select(Key).where(Key.key_hash == hash_key(key)))
        if row is None:
            raise AuthError("unknown API key")
        if row.revoked is not None:
            raise AuthError(f"this API key ({row.name}) was revoked")
        return row

    # ------------------------------------------------------------------ submissions
    def submit(
        self, key: str | None, competition: str, filename: str, code: bytes, fork: int | None = None
    ) -> int:
        """Store a submission and queue its evaluation; returns its id.

        The rate-limit check and the insert are one transaction that holds the author's
        lock (see _lock_key), so concurrent uploads with one key cannot all pass the check."""
        author = self.authenticate(key)
        comp = self.competition(competition)
        form = _inspect(code, comp)
        no_parent = NotFound(f"cannot fork {fork}: no such submission in {competition}")
        if fork is not None and not 0 < fork <= MAX_ID:
            raise no_parent
        with self.Session() as s:
            self._lock_key(s, author.id)
            if s.get(Key, author.id).revoked is not None:  # revoked since authenticate
                raise AuthError(f"this API key ({author.name}) was revoked")
            crow = self._competition_row(s, competition)
            if fork is not None:
                parent = s.get(Submission, fork)
                if parent is None or parent.competition_id != crow.id:
                    raise no_parent
            recent = s.scalar(
                select(func.count())
                .select_from(Submission)
                .where(
                    Submission.author_id == author.id,
                    Submission.competition_id == crow.id,
                    Submission.created > now() - DAY,
                )
            )
            if recent >= comp.submissions_per_day and not author.admin:
                raise RateLimited(
                    f"{author.name} has made {recent} submissions to {competition} in the "
                    f"last 24 h; the limit is {comp.submissions_per_day}"
                )
            sub = Submission(
                competition_id=crow.id,
                author_id=author.id,
                parent_id=fork,
                filename=safe_filename(filename),
                code=code,
                sha256=hashlib.sha256(code).hexdigest(),
                size=len(code),
                form=form,
                state="queued",
                round=int(now() // comp.round_seconds),
            )
            s.add(sub)
            s.flush()
            jobqueue.enqueue(s, sub.id)
            s.commit()
            return sub.id

    @staticmethod
    def _lock_key(s, key_id: int) -> None:
        """Serialise one key's submissions until the transaction ends: PostgreSQL locks the
        key's row (SELECT ... FOR UPDATE); SQLite takes the database's write lock before the
        first read (BEGIN IMMEDIATE), where a plain transaction would read unlocked."""
        if s.bind.dialect.name == "sqlite":
            s.execute(text("BEGIN IMMEDIATE"))
        else:
            s.execute(select(Key.id).where(Key.id == key_id).with_for_update())

    def _get(self, s, sid: int) -> Submission:
        sub = s.get(Submission, sid) if 0 < sid <= MAX_ID else None
        if sub is None:
            raise NotFound(f"no submission {sid}")
        return sub

    def revealed(self, sub: Submission, comp: Competition) -> bool:
        return now() >= sub.created + comp.reveal_delay_seconds

    def status(self, sid: int, viewer: str | None = None) -> dict[str, Any]:
        """State, score and per-tensor results. Detailed reasons, error and log only once
        revealed or to the author and admins (`detailed`); to others, until the reveal,
        `reason` and `error` are their categories (fixed words, no submitted text)."""
        with self.Session() as s:
            sub = self._get(s, sid)
            crow = s.get(CompetitionRow, sub.competition_id)
            comp = self.competition(crow.name)
            author = s.get(Key, sub.author_id)
            results = s.scalars(
                select(Result).where(Result.submission_id == sid).order_by(Result.id)
            ).all()
            job = s.scalar(select(Job).where(Job.submission_id == sid))
            children = s.scalars(select(Submission.id).where(Submission.parent_id == sid)).all()
        revealed = self.revealed(sub, comp)
        detailed = revealed or self._may_see(viewer, sub)
        category = _error_category(sub)
        return {
            "id": sub.id,
            "competition": crow.name,
            "author": author.name,
            "filename": sub.filename,
            "sha256": sub.sha256,
            "size": sub.size,
            "form": sub.form,
            "state": sub.state,
            "score": sub.score,
            "error": sub.error if detailed else category,
            "error_category": category,
            "round": sub.round,
            "parent": sub.parent_id,
            "children": list(children),
            "created": sub.created,
            "started": sub.started,
            "finished": sub.finished,
            "attempts": job.attempts if job else 0,
            "worker": sub.worker,
            "sandbox": sub.engine,
            "revealed": self.revealed(sub, comp),
            "reveal_at": sub.created + comp.reveal_delay_seconds,
            "detailed": detailed,
            "results": [_result_view(r, crow.track, detailed) for r in results],
            "log": (sub.log if revealed else sub.log[-AUTHOR_LOG_CHARS:]) if detailed else None,
        }

    def _may_see(self, viewer: str | None, sub: Submission) -> bool:
        if not viewer:
            return False
        try:
            key = self.authenticate(viewer)
        except AuthError:
            return False
        return key.admin or key.id == sub.author_id

    def download(self, sid: int, viewer: str | None = None) -> tuple[str, bytes]:
        """(filename, code) of a revealed submission (or the viewer's own)."""
        with self.Session() as s:
            sub = self._get(s, sid)
            comp = self.competition(s.get(CompetitionRow, sub.competition_id).name)
        if not (self.revealed(sub, comp) or self._may_see(viewer, sub)):
            raise Forbidden(
                f"submission {sid} is revealed {comp.reveal_delay_seconds} s after it was made"
            )
        return sub.filename, sub.code

    # ------------------------------------------------------------------ results
    def record(self, job_id: int, owner: str, outcome: RoundResult | None, error: str = "",
               log: str = "", category: str = "evaluation failed") -> bool:  # fmt: skip
        """Store a finished evaluation if owner still holds the job (atomically).

        No outcome (the evaluation itself failed): state `failed` with error (category: what
        others see). An outcome whose every tensor failed: state `failed`, score 0, the first
        cause as the error. Otherwise `done`, and it may lead. Everything that came from the
        submission (reasons, error, log) is cleaned first (clean_text) so no entry can make
        the database refuse the write and stall the worker."""
        with self.Session() as s:
            if not jobqueue.owns(s, job_id, owner):
                return False
            job = s.get(Job, job_id)
            sub = s.get(Submission, job.submission_id)
            track = s.get(CompetitionRow, sub.competition_id).track
            s.query(Result).filter(Result.submission_id == sub.id).delete()
            sub.state, sub.score, sub.error, sub.error_category = "failed", None, None, None
            if outcome is None:
                sub.error = clean_text(error or category, REASON_CHARS)
                sub.error_category = category
            else:
                sub.engine = outcome.engine or None
                rows = [_result_row(sub.id, r, track) for r in outcome.tensors]
                s.add_all(rows)
                sub.score = _finite(outcome.score) or 0.0
                failed = [r for r in rows if not r.ok]
                if not rows:
                    sub.error = sub.error_category = "no tensors were evaluated"
                elif len(failed) == len(rows):
                    first = failed[0]
                    sub.error = clean_text(f"all tensors failed; the first, {first.tensor}: "
                                           f"{first.reason}", REASON_CHARS)  # fmt: skip
                    sub.error_category = f"all tensors failed: {first.category}"
                else:
                    sub.state = "done"
                    self._maybe_lead(s, sub)
            sub.log = clean_text(log, LOG_CHARS, keep_end=True)
            sub.worker = owner
            sub.finished = now()
            job.state = "done" if outcome is not None else "failed"
            job.owner, job.updated = None, now()
            s.commit()
            return True

    def _maybe_lead(self, s, sub: Submission) -> None:
        crow = s.get(CompetitionRow, sub.competition_id)
        comp = self.competition(crow.name)
        top = s.scalar(
            select(Leader)
            .where(Leader.competition_id == crow.id)
            .order_by(Leader.id.desc())
            .limit(1)
        )
        if sub.score is None or sub.score <= 0:
            return
        if top is None or sub.score > top.score * (1.0 + comp.margin):
            s.add(Leader(competition_id=crow.id, submission_id=sub.id, score=sub.score))

    def mark_started(self, job_id: int) -> tuple[Submission, Competition]:
        with self.Session() as s:
            job = s.get(Job, job_id)
            sub = s.get(Submission, job.submission_id)
            sub.state, sub.started = "running", now()
            comp = self.competition(s.get(CompetitionRow, sub.competition_id).name)
            s.commit()
            return sub, comp

    def competition_of(self, job: Job) -> Competition:
        with self.Session() as s:
            sub = s.get(Submission, job.submission_id)
            return self.competition(s.get(CompetitionRow, sub.competition_id).name)

    def give_up(self, job: Job, comp: Competition) -> bool:
        """Fail a job that has used up its attempts (its workers kept dying)."""
        if job.attempts <= comp.max_attempts:
            return False
        return self.record(
            job.id,
            job.owner,
            None,
            error=f"evaluation abandoned after {comp.max_attempts} attempts",
            category="evaluation abandoned",
        )

    # ------------------------------------------------------------------ views
    def leaderboard(self, competition: str) -> list[dict[str, Any]]:
        """Submissions that scored above zero, best first, with the standing leader marked
        (failed and zero-score entries are not ranked: see `recent`)."""
        with self.Session() as s:
            crow = self._competition_row(s, competition)
            rows = s.execute(
                select(Submission, Key.name)
                .join(Key, Key.id == Submission.author_id)
                .where(
                    Submission.competition_id == crow.id,
                    Submission.state == "done",
                    Submission.score > 0,
                )
                .order_by(Submission.score.desc(), Submission.created)
            ).all()
            top = s.scalar(
                select(Leader.submission_id)
                .where(Leader.competition_id == crow.id)
                .order_by(Leader.id.desc())
                .limit(1)
            )
        return [
            {
                "rank": i + 1,
                "id": sub.id,
                "author": name,
                "score": sub.score,
                "parent": sub.parent_id,
                "created": sub.created,
                "leader": sub.id == top,
            }
            for i, (sub, name) in enumerate(rows)
        ]

    def recent(self, competition: str, limit: int = 50) -> list[dict[str, Any]]:
        """The latest submissions of a competition in every state, newest first, each with
        its error as a category only (public: no submitted text but the safe filename)."""
        with self.Session() as s:
            crow = self._competition_row(s, competition)
            rows = s.execute(
                select(Submission, Key.name)
                .join(Key, Key.id == Submission.author_id)
                .where(Submission.competition_id == crow.id)
                .order_by(Submission.id.desc())
                .limit(max(1, min(limit, 500)))
            ).all()
        return [
            {
                "id": sub.id,
                "author": name,
                "filename": sub.filename,
                "state": sub.state,
                "score": sub.score,
                "error": _error_category(sub),
                "parent": sub.parent_id,
                "created": sub.created,
            }
            for sub, name in rows
        ]

    def staircase(self, competition: str) -> list[dict[str, Any]]:
        """Every change of leader: when, who, with what score."""
        with self.Session() as s:
            crow = self._competition_row(s, competition)
            rows = s.scalars(
                select(Leader).where(Leader.competition_id == crow.id).order_by(Leader.id)
            ).all()
        return [{"at": r.at, "id": r.submission_id, "score": r.score} for r in rows]

    def lineage(self, sid: int) -> dict[str, Any]:
        """Ancestors (root first) and the tree of descendants of a submission."""
        with self.Session() as s:
            sub = self._get(s, sid)
            ancestors = []
            cur = sub
            while cur.parent_id is not None and len(ancestors) < 10_000:
                cur = s.get(Submission, cur.parent_id)
                ancestors.append({"id": cur.id, "score": cur.score})
            edges = s.execute(
                select(Submission.id, Submission.parent_id, Submission.score).where(
                    Submission.competition_id == sub.competition_id
                )
            ).all()
        kids: dict[int, list[tuple[int, float | None]]] = {}
        for i, p, sc in edges:
            if p is not None:
                kids.setdefault(p, []).append((i, sc))

        def tree(i: int, score: float | None, depth: int = 0) -> dict[str, Any]:
            children = kids.get(i, []) if depth < 200 else []
            return {
                "id": i,
                "score": score,
                "children": [tree(c, sc, depth + 1) for c, sc in children],
            }

        return {"id": sid, "ancestors": ancestors[::-1], "tree": tree(sid, sub.score)}

    def competitions(self) -> list[dict[str, Any]]:
        out = []
        for c in self.config.competition:
            board = self.leaderboard(c.name)
            leader = next((b for b in board if b["leader"]), None)
            out.append({**json.loads(c.model_dump_json()), "entries": len(board), "leader": leader,
                        "public_sample": [e.name for e in self.pool.public]})  # fmt: skip
        return out

    def queue_depth(self) -> dict[str, int]:
        with self.Session() as s:
            rows = s.execute(select(Job.state, func.count()).group_by(Job.state)).all()
        return {state: n for state, n in rows}


def _inspect(code: bytes, comp: Competition) -> str:
    """inspect_solution, with the parser's own failures on hostile sources (too deep to
    parse: RecursionError or MemoryError; NUL bytes: ValueError) as clear refusals."""
    from swarmpress.arena import envs

    try:
        env = envs.get(comp.env_name)
        modules = env.modules()
    except (envs.EnvError, OSError) as exc:
        raise ArenaError(f"competition {comp.name}: {exc}") from None
    try:
        return inspect_solution(code, comp.max_file_bytes, comp.track, modules, env.name)
    except SolutionError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise ArenaError(
            f"the solution cannot be parsed: it nests too deeply for Python's parser "
            f"({type(exc).__name__}); flatten its deepest expression"
        ) from None
    except ValueError as exc:
        raise ArenaError(f"the solution cannot be parsed: {clean_text(exc, 200)}") from None


def _result_row(sid: int, r: TensorResult, track: str) -> Result:
    """A tensor's result as a row: text cleaned and capped, non-finite numbers dropped, the
    failure's category computed from it."""
    reason = clean_text(r.reason, REASON_CHARS)
    return Result(
        submission_id=sid,
        tensor=clean_text(r.tensor, 255),
        ok=bool(r.ok),
        score=_finite(r.score) or 0.0,
        ratio=_finite(r.ratio),
        similarity=_finite(r.similarity),
        seconds_compress=_finite(r.seconds_compress),
        seconds_decompress=_finite(r.seconds_decompress),
        reason=reason,
        category=failure_category(bool(r.ok), reason, track),
    )


def _result_view(r: Result, track: str, detailed: bool) -> dict[str, Any]:
    """A result as the API shows it: reason detailed or, to others before the reveal, its
    category (derived on reading for rows stored before categories were)."""
    category = r.category if r.category is not None else failure_category(r.ok, r.reason, track)
    return {
        "tensor": r.tensor,
        "ok": r.ok,
        "score": r.score,
        "ratio": r.ratio,
        "similarity": r.similarity,
        "seconds_compress": r.seconds_compress,
        "seconds_decompress": r.seconds_decompress,
        "reason": r.reason if detailed else category,
        "category": category,
    }


def _error_category(sub: Submission) -> str | None:
    """A submission's error in the fixed vocabulary (None when it has none)."""
    if sub.error_category is not None:
        return sub.error_category
    return "evaluation failed" if sub.error else None
