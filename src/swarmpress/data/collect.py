"""Collect: items from a source into the store, in batches, bad items counted and skipped.

Each batch is one transaction and the uri is the dedup key, so running a collection again
after a crash (or twice) adds nothing twice: what was committed is skipped as duplicate,
what was lost with the crashed batch is added. A source that fails mid-way (the network
gone on page 3, Ctrl-C) keeps what it had read: that batch is stored before the error
passes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from swarmpress.data.records import Record, printable
from swarmpress.data.store import Store

MAX_ERRORS_KEPT = 20


def collect(
    store: Store,
    items: Iterable[tuple[Record | None, str | None]],
    source: str,
    batch: int = 500,
    limit: int | None = None,
    progress: Callable[[dict], None] | None = None,
    in_batch: Callable[[Any, dict], None] | None = None,
) -> dict[str, Any]:
    """Insert every good item (up to `limit` read); the summary `collect --json` prints.
    `in_batch(conn, stats)` runs inside each batch's transaction with the stats as they
    will be once it commits; `progress(stats)` after the commit."""
    t0 = time.monotonic()
    stats = {"source": source, "store": store.display, "read": 0, "inserted": 0, "duplicates": 0,
             "skipped": 0, "evicted": 0, "errors": []}  # fmt: skip
    pending: list[Record] = []

    def then(conn: Any, res: Any) -> None:
        if in_batch is not None:
            in_batch(conn, stats | {"inserted": stats["inserted"] + res.inserted,
                                    "duplicates": stats["duplicates"] + res.duplicates,
                                    "evicted": stats["evicted"] + res.evicted})  # fmt: skip

    def flush() -> None:
        res = store.insert(pending, then=then)
        stats["inserted"] += res.inserted
        stats["duplicates"] += res.duplicates
        stats["evicted"] += res.evicted
        pending.clear()
        if progress is not None:
            progress(stats)

    source_items = iter(items)
    while limit is None or stats["read"] < limit:
        try:
            item = next(source_items, None)
        except BaseException:
            if pending:  # what was read before the source failed is kept
                flush()
            raise
        if item is None:
            break
        rec, err = item
        stats["read"] += 1
        if rec is None:
            stats["skipped"] += 1
            if len(stats["errors"]) < MAX_ERRORS_KEPT:
                stats["errors"].append(printable(str(err)))
            continue
        pending.append(rec)
        if len(pending) >= batch:
            flush()
    if pending:
        flush()
    stats["records_in_store"] = store.count()
    stats["seconds"] = round(time.monotonic() - t0, 3)
    return stats
