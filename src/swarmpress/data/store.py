"""The record store: SQLite by default (WAL, full-text index), PostgreSQL by URL.

One `records` table keyed by an integer id with the uri unique (a second insert of a uri
is skipped: dedup), indexed by hour bucket, by source and by label, and by (time, id) for
stable newest-first paging. The searchable text (title and body) is indexed for full-text
search: an FTS5 table on SQLite (rowid = record id), a generated `tsvector` with a GIN index
on PostgreSQL. A size cap (bytes of content) evicts the oldest records first. Every batch
is one transaction, so a process killed mid-write leaves the store as it was before the
batch or after it, never between.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from swarmpress.data.records import Record, content_json, parse_record
from swarmpress.errors import SwarmpressError

DEFAULT_STORE = "~/.swarmpress/data.db"
STORE_ENV = "SWARMPRESS_DATA_STORE"


class StoreError(SwarmpressError, RuntimeError):
    """A store that cannot be opened or used; the message names it and why."""


meta = MetaData()
records = Table(
    "records",
    meta,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uri", String(2048), nullable=False, unique=True),
    Column("ts_us", BigInteger, nullable=False),  # the item's time, microseconds since epoch
    Column("bucket", Integer, nullable=False),  # hours since epoch
    Column("source", String(64), nullable=False),
    Column("label", String(256)),
    Column("author", String(256)),
    Column("content", Text, nullable=False),  # JSON
    Column("size", Integer, nullable=False),
    Column("scraped_us", BigInteger, nullable=False),
    Index("ix_records_bucket", "bucket"),
    Index("ix_records_source_bucket", "source", "bucket"),
    Index("ix_records_label_bucket", "label", "bucket"),
    Index("ix_records_ts", "ts_us", "id"),
    Index("ix_records_author", "author"),
)


def store_url(location: str | None = None) -> str:
    """A SQLAlchemy URL from --store, env SWARMPRESS_DATA_STORE or the default file."""
    loc = location or os.environ.get(STORE_ENV) or DEFAULT_STORE
    if "://" in loc:
        if loc.startswith("postgres://"):
            loc = "postgresql://" + loc[len("postgres://") :]
        if loc.startswith("postgresql://"):
            loc = "postgresql+psycopg://" + loc[len("postgresql://") :]
        return loc
    path = Path(loc).expanduser()
    return f"sqlite:///{path}"


def _us(dt) -> int:
    return round(dt.timestamp() * 1_000_000)


@dataclass
class InsertResult:
    inserted: int
    duplicates: int
    evicted: int = 0


class Store:
    """Records in a database; see the module docstring."""

    def __init__(
        self, location: str | None = None, max_bytes: int | None = None, create: bool = True
    ) -> None:
        """`create=False`: a SQLite file that does not exist is refused (exit 2), not made:
        what reads a store (search, export, pack, jobs) must not conjure an empty one from
        a typo. A database URL (postgresql://) names a server's database: always opened."""
        if max_bytes is not None and max_bytes < 1:
            raise StoreError(f"the size cap must be at least 1 byte, not {max_bytes}")
        self.url = store_url(location)
        self.max_bytes = max_bytes
        try:
            self.display = make_url(self.url).render_as_string(hide_password=True)
        except ArgumentError:
            self.display = self.url
        if not create and self.url.startswith("sqlite:///"):
            path = Path(self.url[len("sqlite:///") :])
            if str(path) not in ("", ":memory:") and not path.exists():
                raise StoreError(f"no store at {path} (`swarmpress data collect --store "
                                 f"{path}` creates one)", exit_code=2)  # fmt: skip
        try:
            if self.url.startswith("sqlite:///"):
                path = Path(self.url[len("sqlite:///") :])
                path.parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(self.url, future=True)
        except (ArgumentError, OSError) as exc:
            raise StoreError(f"cannot open store {self.display}: {exc}") from None
        except ModuleNotFoundError as exc:
            raise StoreError(f"store {self.display}: driver missing ({exc.name})") from None
        self.sqlite = self.engine.dialect.name == "sqlite"
        if self.sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            self._create()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot open store {self.display}: {_short(exc)}") from None

    # ------------------------------------------------------------------ schema
    def _create(self) -> None:
        meta.create_all(self.engine)
        with self.engine.begin() as conn:
            if self.sqlite:
                conn.exec_driver_sql(
                    "CREATE VIRTUAL TABLE IF NOT EXISTS records_fts USING fts5("
                    "text, tokenize='unicode61 remove_diacritics 2')"
                )
            elif not conn.exec_driver_sql(  # ALTER TABLE locks the table: only once
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'records' "
                "AND column_name = 'tsv' AND table_schema = current_schema()"
            ).first():
                conn.exec_driver_sql(
                    "ALTER TABLE records ADD COLUMN IF NOT EXISTS tsv tsvector GENERATED ALWAYS "
                    "AS (to_tsvector('simple', coalesce(content::json->>'title', '') || ' ' || "
                    "coalesce(content::json->>'text', ''))) STORED"
                )
                conn.exec_driver_sql(
                    "CREATE INDEX IF NOT EXISTS ix_records_tsv ON records USING gin (tsv)"
                )

    # ------------------------------------------------------------------ writes
    def insert(self, recs: Iterable[Record], then: Callable[[Any, InsertResult], None] | None = None
               ) -> InsertResult:  # fmt: skip
        """Add records in one transaction; uris already stored are skipped (dedup). `then`
        runs inside that transaction with its connection and the result, so a caller's own
        bookkeeping (a job's counter and cursor) commits with the records or not at all."""
        rows = []
        seen: set[str] = set()
        dup = 0
        for r in recs:
            if r.uri in seen:
                dup += 1
                continue
            seen.add(r.uri)
            author = r.content.get("author")
            author = author.lower()[:256] if isinstance(author, str) else None
            rows.append({
                "uri": r.uri, "ts_us": _us(r.datetime), "bucket": r.bucket, "source": r.source,
                "label": r.label, "author": author,
                "content": content_json(r.content), "size": r.size,
                "scraped_us": _us(r.scraped_at), "_text": r.text,
            })  # fmt: skip
        if not rows:
            result = InsertResult(0, dup)
            if then is not None:
                try:
                    with self.engine.begin() as conn:
                        then(conn, result)
                except DBAPIError as exc:
                    raise StoreError(f"store {self.display}: {_short(exc)}") from None
            return result
        rows.sort(key=lambda row: row["uri"])  # one lock order for concurrent writers
        texts = {row["uri"]: row.pop("_text") for row in rows}
        dialect_insert = sqlite_insert if self.sqlite else pg_insert
        # Skipping stored uris in the INSERT itself (not by reading first) keeps two
        # collectors on one store from tripping over each other: the statement takes the
        # write lock at once, and what it did not insert it does not return.
        stmt = (
            dialect_insert(records)
            .on_conflict_do_nothing(index_elements=["uri"])
            .returning(records.c.id, records.c.uri)
        )
        try:
            with self.engine.begin() as conn:
                new = conn.execute(stmt, rows).all()
                if self.sqlite and new:
                    conn.exec_driver_sql(
                        "INSERT INTO records_fts(rowid, text) VALUES (?, ?)",
                        [(rid, texts[uri]) for rid, uri in new],
                    )
                gone = self._evict(conn) if self.max_bytes is not None else set()
                # a record of this batch older than everything kept goes at once: not counted
                # as inserted (a collector that sees it again does not count it twice either)
                kept = sum(rid not in gone for rid, _ in new)
                result = InsertResult(kept, dup + len(rows) - len(new), len(gone))
                if then is not None:
                    then(conn, result)
        except DBAPIError as exc:
            raise StoreError(f"store {self.display}: {_short(exc)}") from None
        return result

    def _evict(self, conn) -> set[int]:
        """Delete the oldest records (by their own time) until the content fits max_bytes;
        the ids deleted."""
        total = int(conn.scalar(select(func.coalesce(func.sum(records.c.size), 0))))
        over = total - int(self.max_bytes)
        if over <= 0:
            return set()
        victims, freed, after = [], 0, (-(2**62), -1)
        while freed < over:
            page = conn.execute(
                select(records.c.id, records.c.size, records.c.ts_us)
                .where((records.c.ts_us > after[0])
                       | ((records.c.ts_us == after[0]) & (records.c.id > after[1])))
                .order_by(records.c.ts_us, records.c.id)
                .limit(1000)
            ).all()  # fmt: skip
            if not page:
                break
            for rid, size, ts in page:
                after = (ts, rid)
                victims.append(rid)
                freed += size
                if freed >= over:
                    break
        for i in range(0, len(victims), 500):
            chunk = victims[i : i + 500]
            conn.execute(records.delete().where(records.c.id.in_(chunk)))
            if self.sqlite:
                marks = ",".join("?" * len(chunk))
                sql = f"DELETE FROM records_fts WHERE rowid IN ({marks})"
                conn.exec_driver_sql(sql, tuple(chunk))
        return set(victims)

    # ------------------------------------------------------------------ reads
    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.count()).select_from(records)))

    def sources(self) -> list[str]:
        """The source names the store holds records of, sorted."""
        with self.engine.connect() as conn:
            return sorted(conn.scalars(select(records.c.source).distinct()))

    def has_source(self, name: str) -> bool:
        """Whether the store holds a record of this source (an index lookup)."""
        with self.engine.connect() as conn:
            found = conn.scalar(select(records.c.id).where(records.c.source == name).limit(1))
        return found is not None

    def total_bytes(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.scalar(select(func.coalesce(func.sum(records.c.size), 0))))

    def check(self) -> str:
        """The database's own integrity check ('ok' when sound)."""
        with self.engine.connect() as conn:
            if self.sqlite:
                return str(conn.exec_driver_sql("PRAGMA integrity_check").scalar())
            conn.execute(text("SELECT count(*) FROM records"))
            return "ok"

    def iter_all(self, batch: int = 1000) -> Iterator[Record]:
        """Every record, oldest first."""
        last = (-(2**62), -1)
        with self.engine.connect() as conn:
            while True:
                q = (
                    select(records)
                    .where(
                        (records.c.ts_us > last[0])
                        | ((records.c.ts_us == last[0]) & (records.c.id > last[1]))
                    )
                    .order_by(records.c.ts_us, records.c.id)
                    .limit(batch)
                )
                rows = conn.execute(q).mappings().all()
                if not rows:
                    return
                for row in rows:
                    yield row_record(row)
                last = (rows[-1]["ts_us"], rows[-1]["id"])

    def close(self) -> None:
        self.engine.dispose()


def row_record(row: Any) -> Record:
    """A Record from a `records` row."""
    from datetime import UTC, datetime

    return parse_record({
        "uri": row["uri"],
        "datetime": datetime.fromtimestamp(row["ts_us"] / 1e6, UTC),
        "source": row["source"], "label": row["label"],
        "content": json.loads(row["content"]), "size": row["size"],
        "scraped_at": datetime.fromtimestamp(row["scraped_us"] / 1e6, UTC),
    })  # fmt: skip


def _sqlite_pragmas(dbapi_conn, _record) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=10000")
    cur.close()


def _short(exc: Exception) -> str:
    return str(getattr(exc, "orig", exc)).splitlines()[0]
