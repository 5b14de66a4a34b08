"""Data-layer fixtures: a store on SQLite and on PostgreSQL, and records to fill it."""

from datetime import UTC, datetime, timedelta

import pytest

from swarmpress.data.records import make_record
from swarmpress.data.store import Store

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """An empty store; every test using it runs on SQLite and on PostgreSQL."""
    url = (
        str(tmp_path / "data.db")
        if request.param == "sqlite"
        else request.getfixturevalue("pg_url")
    )
    s = Store(url)
    yield s
    s.close()


def rec(i: int, text: str = "", source: str = "reddit", label: str | None = "r/Python",
        author: str = "alice", hours: float = 0.0):  # fmt: skip
    """Record i: distinct uri, its own time (T0 + i minutes + hours)."""
    content = {"text": text or f"post number {i}", "author": author, "title": f"title {i}"}
    when = T0 + timedelta(minutes=i, hours=hours)
    return make_record(f"https://example.org/{source}/{i}", when, source, content, label)
