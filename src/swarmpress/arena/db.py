"""The arena's database: keys, competitions, submissions, per-tensor results, the job queue
and the leader history. SQLAlchemy 2 over SQLite (WAL, the embedded default) or PostgreSQL
(by URL, for several machines). Times are UTC epoch seconds (floats), identical on both.
Columns added since a database was made are added when it is opened (add_missing_columns).
"""

from __future__ import annotations

import time

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    inspect,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from swarmpress.sql import make_engine


def now() -> float:
    return time.time()


class Base(DeclarativeBase):
    pass


class Key(Base):
    """An API key (stored as its SHA-256, never the key itself) and the name of whoever
    holds it; `revoked` is when it was withdrawn (None while it is valid)."""

    __tablename__ = "keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    admin: Mapped[bool] = mapped_column(Boolean, default=False)
    created: Mapped[float] = mapped_column(Float, default=now)
    revoked: Mapped[float | None] = mapped_column(Float, nullable=True)


class CompetitionRow(Base):
    __tablename__ = "competitions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    track: Mapped[str] = mapped_column(String(32))
    config_json: Mapped[str] = mapped_column(Text)
    created: Mapped[float] = mapped_column(Float, default=now)


class Submission(Base):
    """One uploaded solution file and its evaluation state."""

    __tablename__ = "submissions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    competition_id: Mapped[int] = mapped_column(ForeignKey("competitions.id"), index=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("keys.id"), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("submissions.id"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    code: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(Integer)
    form: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)  # detailed (author, admin)
    # the same failure in a fixed vocabulary: what others see before the reveal
    error_category: Mapped[str | None] = mapped_column(String(64), nullable=True)
    engine: Mapped[str | None] = mapped_column(String(16), nullable=True)  # sandbox that ran it
    round: Mapped[int] = mapped_column(Integer, default=0)
    log: Mapped[str] = mapped_column(Text, default="")
    worker: Mapped[str | None] = mapped_column(String(128), nullable=True)
    created: Mapped[float] = mapped_column(Float, default=now, index=True)
    started: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished: Mapped[float | None] = mapped_column(Float, nullable=True)


class Result(Base):
    """One tensor of one submission's round: what happened and what it scored."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), index=True)
    tensor: Mapped[str] = mapped_column(String(255))
    ok: Mapped[bool] = mapped_column(Boolean)
    score: Mapped[float] = mapped_column(Float)
    ratio: Mapped[float | None] = mapped_column(Float, nullable=True)
    similarity: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds_compress: Mapped[float | None] = mapped_column(Float, nullable=True)
    seconds_decompress: Mapped[float | None] = mapped_column(Float, nullable=True)
    reason: Mapped[str] = mapped_column(Text, default="")  # detailed (author, admin)
    # the failure in a fixed vocabulary ("compress failed", ...): public before the reveal;
    # None in rows written before the column existed (then derived from the row on reading)
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)


class Job(Base):
    """The durable queue: one job per submission, leased by a worker while it runs."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"), unique=True)
    state: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    owner: Mapped[str | None] = mapped_column(String(128), nullable=True)
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created: Mapped[float] = mapped_column(Float, default=now)
    updated: Mapped[float] = mapped_column(Float, default=now)


class Leader(Base):
    """A change of the top entry: the staircase of a competition."""

    __tablename__ = "leaders"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    competition_id: Mapped[int] = mapped_column(ForeignKey("competitions.id"), index=True)
    submission_id: Mapped[int] = mapped_column(ForeignKey("submissions.id"))
    score: Mapped[float] = mapped_column(Float)
    at: Mapped[float] = mapped_column(Float, default=now)


def add_missing_columns(engine: Engine) -> list[str]:
    """Add the model's columns that an existing database (made by an earlier version) lacks;
    returns them as "table.column". Only nullable columns are ever added, so old rows stay
    valid; the tables are inspected first, so a current database takes no ALTER lock, and
    several processes opening one database at once do not trip over each other."""
    insp = inspect(engine)
    have_tables = set(insp.get_table_names())
    added = []
    for table in Base.metadata.sorted_tables:
        if table.name not in have_tables:
            continue
        have = {c["name"] for c in insp.get_columns(table.name)}
        for col in table.columns:
            if col.name in have:
                continue
            if not col.nullable:
                raise RuntimeError(f"cannot add the required column {table.name}.{col.name} "
                                   "to an existing arena database; create a new home")  # fmt: skip
            kind = col.type.compile(dialect=engine.dialect)
            guard = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {guard}{col.name} {kind}"
            try:
                with engine.begin() as conn:
                    conn.exec_driver_sql(ddl)
            except OperationalError:  # SQLite: another process added it a moment ago
                cols = {c["name"] for c in inspect(engine).get_columns(table.name)}
                if col.name not in cols:
                    raise
            added.append(f"{table.name}.{col.name}")
    return added


def open_db(url: str) -> sessionmaker:
    """Create the tables if needed (and add columns new since the database was made) and
    return a session factory."""
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    add_missing_columns(engine)
    return sessionmaker(engine, expire_on_commit=False)
