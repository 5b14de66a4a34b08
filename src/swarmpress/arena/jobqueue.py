"""A durable job queue in the arena database, shared by any number of workers.

A worker claims a job with a compare-and-set UPDATE (queued, or leased with an expired
lease -> leased by me until now + lease): atomic on SQLite (writers are serialised) and on
PostgreSQL (the losing UPDATE re-reads the row and matches nothing), so no row locks or
server-specific SQL are needed and workers on several machines can share a PostgreSQL
database. A running worker renews its lease; one that dies stops renewing and its job
becomes claimable again, up to the competition's attempt limit.
"""

from __future__ import annotations

import math
import os

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from swarmpress.arena.db import Job, now
from swarmpress.errors import UsageError

LEASE_ENV = "SWARMPRESS_ARENA_LEASE"
LEASE_S = 30.0  # seconds a lease lasts unless LEASE_ENV says otherwise


def lease_seconds() -> float:
    """The lease a worker takes: $SWARMPRESS_ARENA_LEASE seconds, else LEASE_S. Read when
    called (a worker reads it when it starts), not at import, so operators and tests can set
    it late; UsageError naming the variable if it is not a positive number."""
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise UsageError(f"{LEASE_ENV}={raw!r}: must be a positive number of seconds")
    return value


def enqueue(session: Session, submission_id: int) -> None:
    """Add a job for a submission (inside the caller's transaction)."""
    session.add(Job(submission_id=submission_id, state="queued"))


def _claimable(t: float):
    return or_(Job.state == "queued", and_(Job.state == "leased", Job.lease_until < t))


def claim(factory: sessionmaker, owner: str, lease_s: float | None = None) -> Job | None:
    """Lease the oldest claimable job to owner, or None when the queue is empty (lease_s:
    seconds, by default lease_seconds())."""
    lease_s = lease_seconds() if lease_s is None else lease_s
    for _ in range(20):  # lose a race to another worker: try the next candidate
        with factory() as s:
            t = now()
            job_id = s.scalar(select(Job.id).where(_claimable(t)).order_by(Job.id).limit(1))
            if job_id is None:
                return None
            res = s.execute(
                update(Job)
                .where(Job.id == job_id, _claimable(t))
                .values(
                    state="leased",
                    owner=owner,
                    lease_until=t + lease_s,
                    attempts=Job.attempts + 1,
                    updated=t,
                )
            )
            s.commit()
            if res.rowcount == 1:
                return s.get(Job, job_id)
    return None


def renew(factory: sessionmaker, job_id: int, owner: str, lease_s: float | None = None) -> bool:
    """Extend a lease (by lease_s, default lease_seconds()); False when the job is no longer
    this owner's."""
    lease_s = lease_seconds() if lease_s is None else lease_s
    with factory() as s:
        res = s.execute(
            update(Job)
            .where(Job.id == job_id, Job.owner == owner, Job.state == "leased")
            .values(lease_until=now() + lease_s, updated=now())
        )
        s.commit()
        return res.rowcount == 1


def owns(session: Session, job_id: int, owner: str) -> bool:
    """Inside a transaction: is the job still leased to owner? (Locks the row on PostgreSQL.)"""
    stmt = select(Job).where(Job.id == job_id, Job.owner == owner, Job.state == "leased")
    if session.bind is not None and session.bind.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return session.scalar(stmt) is not None
