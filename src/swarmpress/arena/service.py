"""The arena's rules as a library: keys, submissions, rate limits, results, the leader,
reveal and lineage. The HTTP API, the CLI and the workers all go through this class.

An arena home directory holds `arena.toml` (the competitions), `pool/` (held-out tensors
and the public sample) and, unless a database URL is given, `arena.db` (SQLite).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from swarmpress.arena import jobqueue
from swarmpress.arena.config import (
    ArenaConfig,
    Competition,
    default_config,
    dump_config,
    load_config,
)
from swarmpress.arena.db import CompetitionRow, Job, Key, Leader, Result, Submission, now, open_db
from swarmpress.arena.evaluate import RoundResult
from swarmpress.arena.pool import Pool, build_pool
from swarmpress.arena.validate import inspect_solution

CONFIG, POOL, DB = "arena.toml", "pool", "arena.db"
DAY = 86_400.0


class ArenaError(Exception):
    """A request the arena refuses; status is the HTTP status it maps to."""

    status = 400


class AuthError(ArenaError):
    status = 401


class Forbidden(ArenaError):
    status = 403


class NotFound(ArenaError):
    status = 404


class RateLimited(ArenaError):
    status = 429


def safe_filename(name: str) -> str:
    """A submitted file's name made safe to store, serve and write: its last component,
    ASCII letters, digits, '.', '_' and '-' only, at most 100 characters."""
    base = re.sub(r"[^A-Za-z0-9._-]", "_", Path(name or "").name)[:100].lstrip(".")
    return base or "solution.py"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def init_home(
    home: str | Path, corpus_dir: str | Path | None = None, config: ArenaConfig | None = None
) -> bool:
    """Create an arena home (default: the embedded competitions); False if it exists."""
    home = Path(home)
    if (home / CONFIG).exists():
        return False
    home.mkdir(parents=True, exist_ok=True)
    if corpus_dir is None:
        from swarmpress.corpus.build import default_corpus

        corpus_dir = default_corpus()
    build_pool(corpus_dir, home / POOL)
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
        """A new API key for name (shown once; only its hash is stored)."""
        key = "sp_" + secrets.token_urlsafe(24)
        with self.Session() as s:
            s.add(Key(name=name, key_hash=hash_key(key), admin=admin))
            s.commit()
        return key

    def has_admin(self) -> bool:
        with self.Session() as s:
            return s.scalar(select(func.count()).select_from(Key).where(Key.admin)) > 0

    def authenticate(self, key: str | None) -> Key:
        if not key:
            raise AuthError("an API key is required (--key or SWARMPRESS_ARENA_KEY)")
        with self.Session() as s:
            row = s.scalar(select(Key).where(Key.key_hash == hash_key(key)))
        if row is None:
            raise AuthError("unknown API key")
        return row

    # ------------------------------------------------------------------ submissions
    def submit(
        self, key: str | None, competition: str, filename: str, code: bytes, fork: int | None = None
    ) -> int:
        """Store a submission and queue its evaluation; returns its id."""
        author = self.authenticate(key)
        comp = self.competition(competition)
        form = inspect_solution(code, comp.max_file_bytes, comp.track)
        with self.Session() as s:
            crow = self._competition_row(s, competition)
            if fork is not None:
                parent = s.get(Submission, fork)
                if parent is None or parent.competition_id != crow.id:
                    raise NotFound(f"cannot fork {fork}: no such submission in {competition}")
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

    def _get(self, s, sid: int) -> Submission:
        sub = s.get(Submission, sid)
        if sub is None:
            raise NotFound(f"no submission {sid}")
        return sub

    def revealed(self, sub: Submission, comp: Competition) -> bool:
        return now() >= sub.created + comp.reveal_delay_seconds

    def status(self, sid: int, viewer: str | None = None) -> dict[str, Any]:
        """State, score and per-tensor results; code and log only once revealed (or own)."""
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
        visible = self.revealed(sub, comp) or self._may_see(viewer, sub)
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
            "error": sub.error,
            "round": sub.round,
            "parent": sub.parent_id,
            "children": list(children),
            "created": sub.created,
            "started": sub.started,
            "finished": sub.finished,
            "attempts": job.attempts if job else 0,
            "worker": sub.worker,
            "revealed": self.revealed(sub, comp),
            "reveal_at": sub.created + comp.reveal_delay_seconds,
            "results": [
                {
                    "tensor": r.tensor,
                    "ok": r.ok,
                    "score": r.score,
                    "ratio": r.ratio,
                    "similarity": r.similarity,
                    "seconds_compress": r.seconds_compress,
                    "seconds_decompress": r.seconds_decompress,
                    "reason": r.reason,
                }
                for r in results
            ],
            "log": sub.log if visible else None,
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
               log: str = "") -> bool:  # fmt: skip
        """Store a finished evaluation if owner still holds the job (atomically)."""
        with self.Session() as s:
            if not jobqueue.owns(s, job_id, owner):
                return False
            job = s.get(Job, job_id)
            sub = s.get(Submission, job.submission_id)
            s.query(Result).filter(Result.submission_id == sub.id).delete()
            if outcome is None:
                sub.state, sub.error, sub.score = "failed", error, None
            else:
                for r in outcome.tensors:
                    s.add(Result(
                        submission_id=sub.id, tensor=r.tensor, ok=r.ok, score=r.score,
                        ratio=r.ratio, similarity=r.similarity,
                        seconds_compress=r.seconds_compress,
                        seconds_decompress=r.seconds_decompress, reason=r.reason,
                    ))  # fmt: skip
                sub.state, sub.score, sub.error = "done", outcome.score, None
                self._maybe_lead(s, sub)
            sub.log = log
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
        )

    # ------------------------------------------------------------------ views
    def leaderboard(self, competition: str) -> list[dict[str, Any]]:
        """Scored submissions, best first, with the standing leader marked."""
        with self.Session() as s:
            crow = self._competition_row(s, competition)
            rows = s.execute(
                select(Submission, Key.name)
                .join(Key, Key.id == Submission.author_id)
                .where(Submission.competition_id == crow.id, Submission.state == "done")
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
