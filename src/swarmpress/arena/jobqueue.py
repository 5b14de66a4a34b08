"""A durable job queue in the arena database, shared by any number of workers.

A worker claims a job with a compare-and-set UPDATE (queued, or leased with an expired
lease -> leased by me until now + lease): atomic on SQLite (writers are serialised) and on
PostgreSQL (the losing UPDATE re-reads the row and matches nothing), so no row locks or
server-specific SQL are needed and workers on several machines can share a PostgreSQL
database. A running worker renews its lease; one that dies stops renewing and its job
becomes claimable again, up to the competition's attempt limit.
"""

from __future__ import annotations

import os

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from swarmpress.arena.db import Job, now

LEASE_S = float(os.environ.get("SWARMPRESS_ARENA_LEASE", "30"))  # seconds


def enqueue(session: Session, submission_id: int) -> None:
    """Add a job for a submission (inside the caller's transaction)."""
    session.add(Job(submission_id=submission_id, state="queued"))


def _claimable(t: float):
    return or_(Job.state == "queued", and_(Job.state == "leased", Job.lease_until < t))


def claim(factory: sessionmaker, owner: str, lease_s: float = LEASE_S) -> Job | None:
    """Lease the oldest claimable job to owner, or None when the queue is empty."""
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


def renew(factory: sessionmaker, job_id: int, owner: str, lease_s: float = LEASE_S) -> bool:
    """Extend a lease; False when the job is no longer this owner's."""
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
