"""Search the store: keywords (full-text, any or all), users, label, source and a time
range, newest first, a page at a time.

Paging is by keyset, not offset: the cursor is the (time, id) of the last record of a page,
opaque to callers (base64 JSON), so page k costs the same as page 1 and records added
meanwhile do not shift what the next page holds. A cursor is a position, not bound to the
query that printed it: with other filters it continues after the same record. Any text
that is not a cursor is a QueryError that says what is wrong (exit 2).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, text
from sqlalchemy.exc import SQLAlchemyError

from swarmpress.data.records import (
    RecordError,
    normalize_label,
    parse_record,
    parse_time,
    strict_loads,
)
from swarmpress.data.store import Store, StoreError, records, row_record
from swarmpress.errors import UsageError

MAX_LIMIT = 10_000
_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class QueryError(UsageError, ValueError):
    """A search that cannot run as asked; the message names the option."""


def parse_when(value: str | None, option: str, now: datetime | None = None) -> datetime | None:
    """--from/--to: ISO 8601, Unix seconds, or a span back from now (`24h`, `7d`, `30m`)."""
    if value is None or value == "":
        return None
    m = _RELATIVE.match(value.strip().lower())
    if m:
        now = now or datetime.now(UTC)
        try:
            return now - timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])
        except OverflowError:
            raise QueryError(f"{option}: {value!r} reaches before the year 1") from None
    raw: Any = value
    with contextlib.suppress(ValueError):
        raw = float(value)
    try:
        return parse_time(raw, option)
    except RecordError as exc:
        raise QueryError(f"{exc} (use ISO 8601, Unix seconds, or e.g. 24h, 7d)") from None


@dataclass
class Query:
    """What `data search` asks for."""

    source: str | None = None
    keywords: list[str] = field(default_factory=list)
    users: list[str] = field(default_factory=list)
    label: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    limit: int = 50
    mode: str = "any"
    cursor: str | None = None

    def check(self) -> None:
        if self.mode not in ("any", "all"):
            raise QueryError(f"--mode must be any or all, not {self.mode!r}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"--limit must be 1..{MAX_LIMIT}, not {self.limit}")
        if self.since and self.until and self.since > self.until:
            raise QueryError("--from is after --to")
        for k in self.keywords:
            if not re.search(r"\w", k):
                raise QueryError(f"keyword {k!r} has no letters or digits to search for")
        if self.cursor is not None:
            decode_cursor(self.cursor)


# A cursor is base64url (unpadded) of the JSON [time in microseconds, record id] of the
# last record shown. What one may hold: a time a record can have (years 1-9999 UTC) and an
# id the store could have given out (1 .. 2**63 - 1); a few dozen characters in all.
CURSOR_CHARS = 96
TS_RANGE = (-62_135_596_800 * 10**6, 253_402_300_800 * 10**6)
ID_RANGE = (1, 2**63 - 1)
_B64URL = re.compile(r"[A-Za-z0-9_-]+={0,2}")


def encode_cursor(ts_us: int, rid: int) -> str:
    return base64.urlsafe_b64encode(json.dumps([ts_us, rid]).encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """(time, id) from a cursor; QueryError naming what is wrong with any other text."""
    # the text itself only when it is plainly a cursor's alphabet (nothing to escape)
    shown = f" {cursor!r}" if len(cursor) <= 40 and _B64URL.fullmatch(cursor) else ""

    def bad(why: str) -> QueryError:
        return QueryError(f"--cursor{shown} is not a cursor this store gave out: {why} "
                          f"(pass a next_cursor as printed, or leave --cursor out to start "
                          f"from the newest)")  # fmt: skip

    if not cursor:
        raise bad("it is empty")
    if len(cursor) > CURSOR_CHARS:
        raise bad(f"{len(cursor)} characters, where a cursor has at most {CURSOR_CHARS}")
    if not _B64URL.fullmatch(cursor):
        raise bad("it is not URL-safe base64 (A-Z, a-z, 0-9, - and _)")
    try:
        raw = base64.urlsafe_b64decode(cursor.rstrip("=") + "=" * (-len(cursor.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        raise bad("its base64 is cut short") from None
    try:
        value = strict_loads(raw)
    except ValueError as exc:
        raise bad(f"it does not hold JSON ({exc})") from None
    if not (isinstance(value, list) and len(value) == 2 and all(type(v) is int for v in value)):
        raise bad("it does not hold a [time, id] pair of integers")
    ts_us, rid = value
    if not TS_RANGE[0] <= ts_us <= TS_RANGE[1]:
        raise bad(f"its time {ts_us} is outside years 1-9999")
    if not ID_RANGE[0] <= rid <= ID_RANGE[1]:
        raise bad(f"its record id {rid} is outside {ID_RANGE[0]}..{ID_RANGE[1]}")
    return ts_us, rid


def _fts_match(keywords: list[str], mode: str) -> str:
    """An FTS5 query: each keyword a quoted phrase (no query syntax gets through)."""
    phrases = ['"' + k.strip().replace('"', '""') + '"' for k in keywords]
    return (" OR " if mode == "any" else " AND ").join(phrases)


def search(store: Store, q: Query) -> dict[str, Any]:
    """{"results": [record JSON], "count": n, "next_cursor": str | None}."""
    q.check()
    conds = []
    if q.source:
        conds.append(records.c.source == q.source)
    if q.label:
        conds.append(records.c.label == normalize_label(q.label))
    if q.users:
        conds.append(records.c.author.in_([u.strip().lstrip("@").lower() for u in q.users]))
    if q.since:
        conds.append(records.c.ts_us >= int(q.since.timestamp() * 1e6))
    if q.until:
        conds.append(records.c.ts_us <= int(q.until.timestamp() * 1e6))
    if q.cursor is not None:
        ts_us, rid = decode_cursor(q.cursor)
        conds.append(
            or_(records.c.ts_us < ts_us, and_(records.c.ts_us == ts_us, records.c.id < rid))
        )
    stmt = select(records)
    if q.keywords:
        if store.sqlite:
            stmt = stmt.where(
                records.c.id.in_(
                    select(text("rowid"))
                    .select_from(text("records_fts"))
                    .where(text("records_fts MATCH :match"))
                )
            ).params(match=_fts_match(q.keywords, q.mode))
        else:
            join = " || " if q.mode == "any" else " && "
            # a keyword is a phrase on both backends (FTS5 quotes it; phraseto_tsquery here)
            parts = [f"phraseto_tsquery('simple', :k{i})" for i in range(len(q.keywords))]
            stmt = stmt.where(text(f"tsv @@ ({join.join(parts)})")).params(
                **{f"k{i}": k for i, k in enumerate(q.keywords)}
            )
    if conds:
        stmt = stmt.where(and_(*conds))
    stmt = stmt.order_by(records.c.ts_us.desc(), records.c.id.desc()).limit(q.limit + 1)
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
    except SQLAlchemyError as exc:
        msg = str(getattr(exc, "orig", exc)).splitlines()[0]
        raise StoreError(f"search failed on {store.display}: {msg}") from None
    more = len(rows) > q.limit
    rows = rows[: q.limit]
    nxt = encode_cursor(rows[-1]["ts_us"], rows[-1]["id"]) if more and rows else None
    return {
        "results": [row_record(r).to_json() for r in rows],
        "count": len(rows),
        "next_cursor": nxt,
    }


def iter_query(store: Store, q: Query, page: int = 1000):
    """Every record a query matches, newest first, page by page."""
    q = Query(**{**q.__dict__, "limit": page, "cursor": None})
    while True:
        res = search(store, q)
        for r in res["results"]:
            yield parse_record(r)
        if not res["next_cursor"]:
            return
        q.cursor = res["next_cursor"]
