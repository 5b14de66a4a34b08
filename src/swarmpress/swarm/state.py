"""The orchestrator's durable state: one row per run in SQLite (the default, a file in the
run folder) or PostgreSQL (by URL), written at every step, held under a lease.

The row carries the run's state as JSON (what `failover.snapshot` makes), an `epoch` that
grows by one at every take-over, the owner's name and the wall-clock time its lease runs
to. Every write names the epoch its writer holds, so an orchestrator that was replaced (a
paused process that wakes after a standby took over) finds its writes refused (`Fenced`)
and stops instead of steering the run a second time. A take-over is one conditional
UPDATE: of two standbys only one wins. Times come from an injectable clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, insert, select, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from swarmpress.errors import SwarmpressError
from swarmpress.sql import make_engine

META = MetaData()
RUNS = Table(
    "swarm_runs",
    META,
    Column("run_id", String(64), primary_key=True),
    Column("epoch", Integer, nullable=False),
    Column("owner", String(200), nullable=False),
    Column("lease_until", Float, nullable=False),
    Column("saved", Integer, nullable=False),  # writes so far
    Column("state", Text, nullable=False),
    Column("updated", Float, nullable=False),
)
MAX_STATE = 64 << 20  # bytes of state JSON a store hands back; more is refused, not parsed


class StateError(SwarmpressError):
    """The run's state store cannot be used (unreachable, missing run, unreadable state)."""


class Fenced(StateError):
    """Another orchestrator took the run over: this one must stop steering it."""


class Held(StateError):
    """The run's lease is held by a live orchestrator."""


@dataclass(frozen=True)
class Lease:
    """What the store says about a run: who holds it, under which epoch, until when."""

    run_id: str
    epoch: int
    owner: str
    lease_until: float
    saved: int
    state: dict[str, Any]


class StateStore:
    """One run's state row in a database (SQLite file or PostgreSQL URL)."""

    def __init__(self, url: str, clock: Callable[[], float] = time.time) -> None:
        self.url, self.clock = url, clock
        try:
            self.engine = make_engine(url)
            META.create_all(self.engine)
        except (SQLAlchemyError, ValueError) as exc:
            raise StateError(f"state store {redact(url)}: {_short(exc)}") from None

    def create(self, run_id: str, owner: str, state: dict[str, Any], lease_s: float) -> int:
        """A new run's row (epoch 1); StateError if the run exists already."""
        now = self.clock()
        row = {"run_id": run_id, "epoch": 1, "owner": owner, "lease_until": now + lease_s,
               "saved": 1, "state": _dump(state), "updated": now}  # fmt: skip
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(RUNS).values(**row))
        except IntegrityError:
            raise StateError(f"run {run_id} already has a state row") from None
        except SQLAlchemyError as exc:
            raise StateError(f"state store {redact(self.url)}: {_short(exc)}") from None
        return 1

    def save(self, run_id: str, epoch: int, state: dict[str, Any], lease_s: float) -> None:
        """Write the run's state and renew the lease; Fenced if the epoch moved on."""
        now = self.clock()
        self._update(run_id, epoch, state=_dump(state), lease_until=now + lease_s, updated=now,
                     saved=RUNS.c.saved + 1)  # fmt: skip

    def renew(self, run_id: str, epoch: int, lease_s: float) -> None:
        """Extend the lease without writing state; Fenced if the epoch moved on."""
        self._update(run_id, epoch, lease_until=self.clock() + lease_s)

    def release(self, run_id: str, epoch: int) -> None:
        """End the lease now (a clean stop): a standby may take over at once."""
        self._update(run_id, epoch, lease_until=0.0)

    def _update(self, run_id: str, epoch: int, **values: Any) -> None:
        try:
            with self.engine.begin() as conn:
                n = conn.execute(
                    update(RUNS).where(RUNS.c.run_id == run_id, RUNS.c.epoch == epoch)
                    .values(**values)
                ).rowcount  # fmt: skip
        except SQLAlchemyError as exc:
            raise StateError(f"state store {redact(self.url)}: {_short(exc)}") from None
        if n != 1:
            raise Fenced(f"run {run_id}: another orchestrator took over (epoch > {epoch})")

    def load(self, run_id: str) -> Lease:
        """The run's row; StateError if there is none or its state does not parse."""
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(RUNS).where(RUNS.c.run_id == run_id)).first()
        except SQLAlchemyError as exc:
            raise StateError(f"state store {redact(self.url)}: {_short(exc)}") from None
        if row is None:
            raise StateError(f"state store {redact(self.url)} has no run {run_id!r}")
        if len(row.state) > MAX_STATE:
            raise StateError(f"run {run_id}: state of {len(row.state)} bytes is over the limit")
        try:
            state = json.loads(row.state)
        except ValueError as exc:
            raise StateError(f"run {run_id}: state is not JSON ({exc})") from None
        if not isinstance(state, dict):
            raise StateError(f"run {run_id}: state is not a JSON object")
        return Lease(row.run_id, row.epoch, row.owner, row.lease_until, row.saved, state)

    def take_over(self, run_id: str, owner: str, lease_s: float) -> Lease:
        """Hold the run under the next epoch if its lease has lapsed; Held if it has not."""
        seen = self.load(run_id)
        now = self.clock()
        if seen.lease_until > now:
            raise Held(
                f"run {run_id} is held by {seen.owner} (epoch {seen.epoch}) for "
                f"{seen.lease_until - now:.1f} s more"
            )
        try:
            with self.engine.begin() as conn:
                n = conn.execute(
                    update(RUNS)
                    .where(RUNS.c.run_id == run_id, RUNS.c.epoch == seen.epoch,
                           RUNS.c.lease_until <= now)
                    .values(epoch=seen.epoch + 1, owner=owner, lease_until=now + lease_s,
                            updated=now)
                ).rowcount  # fmt: skip
        except SQLAlchemyError as exc:
            raise StateError(f"state store {redact(self.url)}: {_short(exc)}") from None
        if n != 1:
            raise Held(f"run {run_id}: another orchestrator took it over first")
        return Lease(run_id, seen.epoch + 1, owner, now + lease_s, seen.saved, seen.state)

    def close(self) -> None:
        self.engine.dispose()


def redact(url: str) -> str:
    """The URL without its password (what error messages and reports show)."""
    head, sep, tail = url.partition("://")
    if not sep or "@" not in tail:
        return url
    cred, _, host = tail.rpartition("@")
    user = cred.split(":", 1)[0]
    return f"{head}://{user}:***@{host}" if ":" in cred else url


def _dump(state: dict[str, Any]) -> str:
    return json.dumps(state, separators=(",", ":"))


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


__all__ = ["Fenced", "Held", "Lease", "StateError", "StateStore", "redact"]
