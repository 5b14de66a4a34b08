"""The store and search, on SQLite and PostgreSQL: dedup, filters, full text, paging,
eviction, and a process killed mid-write."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from swarmpress.data.query import Query, QueryError, decode_cursor, iter_query, search
from swarmpress.data.store import Store, StoreError, store_url
from tests.data.conftest import T0, rec


def uris(res):
    return [r["uri"].rsplit("/", 1)[1] for r in res["results"]]


def test_insert_dedups_by_uri(store):
    first = store.insert([rec(1), rec(2), rec(2)])
    assert (first.inserted, first.duplicates) == (2, 1)
    again = store.insert([rec(2), rec(3)])
    assert (again.inserted, again.duplicates) == (1, 1)
    assert store.count() == 3
    assert [r.uri for r in store.iter_all()] == [rec(i).uri for i in (1, 2, 3)]
    assert store.check() == "ok"


def test_filters_and_newest_first(store):
    store.insert([rec(i, source="reddit" if i % 2 else "x", label="r/A" if i < 5 else "#b",
                      author="Bob" if i % 3 == 0 else "alice") for i in range(10)])  # fmt: skip
    assert uris(search(store, Query(limit=100))) == [str(i) for i in range(9, -1, -1)]
    assert uris(search(store, Query(source="x", limit=100))) == ["8", "6", "4", "2", "0"]
    assert uris(search(store, Query(label="R/a", limit=100))) == ["4", "3", "2", "1", "0"]
    assert uris(search(store, Query(users=["@BOB"], limit=100))) == ["9", "6", "3", "0"]
    lo, hi = T0.replace(minute=3), T0.replace(minute=5)
    assert uris(search(store, Query(since=lo, until=hi, limit=100))) == ["5", "4", "3"]


def test_full_text_any_and_all(store):
    store.insert([
        rec(1, "the quick brown fox"), rec(2, "a lazy dog sleeps"),
        rec(3, "quick dog, lazy fox"), rec(4, 'quotes " and OR NEAR( syntax'),
    ])  # fmt: skip
    assert uris(search(store, Query(keywords=["fox"]))) == ["3", "1"]
    assert uris(search(store, Query(keywords=["fox", "dog"], mode="any"))) == ["3", "2", "1"]
    assert uris(search(store, Query(keywords=["fox", "dog"], mode="all"))) == ["3"]
    assert uris(search(store, Query(keywords=["Quick"]))) == ["3", "1"]  # case-insensitive
    # query syntax in a keyword is text, not an operator (and never an error)
    assert uris(search(store, Query(keywords=['NEAR( "']))) in (["4"], [])
    assert uris(search(store, Query(keywords=["nothing"]))) == []
    # a keyword of several words is a phrase on both backends
    assert uris(search(store, Query(keywords=["quick brown"]))) == ["1"]
    assert uris(search(store, Query(keywords=["brown quick"]))) == []


def test_cursor_pages_cover_everything_once(store):
    store.insert([rec(i, hours=(i % 3)) for i in range(23)])
    seen, cursor, pages = [], None, 0
    while True:
        res = search(store, Query(limit=5, cursor=cursor))
        seen += uris(res)
        pages += 1
        cursor = res["next_cursor"]
        if cursor is None:
            break
        store.insert([rec(100 + pages, hours=10)])  # newer arrivals do not shift pages
    assert pages == 5
    assert sorted(int(u) for u in seen) == list(range(23))
    everything = list(iter_query(store, Query(), page=4))
    assert len(everything) == 23 + 4 and len({r.uri for r in everything}) == 27
    times = [r.datetime for r in everything]
    assert times == sorted(times, reverse=True)
    assert everything[0].uri == rec(104).uri  # the arrivals during paging are the newest


@pytest.mark.parametrize(
    "q, msg",
    [
        (Query(mode="some"), "--mode"),
        (Query(limit=0), "--limit"),
        (Query(cursor="garbage"), "--cursor"),
        (Query(since=T0.replace(hour=13), until=T0), "--from is after --to"),
        (Query(keywords=[" "]), "no letters"),
        (Query(keywords=["fox", "!!!"], mode="all"), "no letters"),
    ],
)
def test_bad_queries(store, q, msg):
    with pytest.raises(QueryError, match=msg):
        search(store, q)


def test_eviction_keeps_the_newest(tmp_path):
    s = Store(str(tmp_path / "capped.db"), max_bytes=rec(0).size * 5)
    res = s.insert([rec(i) for i in range(8)])
    assert res.evicted == 3
    assert [r.uri for r in s.iter_all()] == [rec(i).uri for i in range(3, 8)]
    assert s.total_bytes() <= rec(0).size * 5
    assert uris(search(s, Query(keywords=["post"], limit=100))) == ["7", "6", "5", "4", "3"]
    # one older than everything kept goes at once and is not counted as inserted
    late = s.insert([rec(1)])
    assert (late.inserted, late.evicted) == (0, 1) and s.count() == 5
    with pytest.raises(StoreError, match="at least 1 byte"):
        Store(str(tmp_path / "zero.db"), max_bytes=0)


def test_store_locations(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARMPRESS_DATA_STORE", str(tmp_path / "env.db"))
    assert store_url(None) == f"sqlite:///{tmp_path / 'env.db'}"
    assert store_url("postgres://u@h/db") == "postgresql+psycopg://u@h/db"
    monkeypatch.delenv("SWARMPRESS_DATA_STORE")
    assert store_url(None).endswith("/.swarmpress/data.db")
    with pytest.raises(StoreError, match="cannot open store"):
        Store("nosuchdb://x")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        Store(str(tmp_path / "file" / "sub.db"))


def test_cursor_is_opaque_but_checked():
    with pytest.raises(QueryError):
        decode_cursor("W1siYSJdXQ")  # base64 JSON of the wrong shape


WRITER = textwrap.dedent("""
    import sys
    from tests.data.conftest import rec
    from swarmpress.data.store import Store
    s = Store(sys.argv[1])
    i = 0
    while True:
        s.insert([rec(i * 200 + j, "filler text " * 20) for j in range(200)])
        i += 1
        print(i, flush=True)
""")


def test_killed_mid_write_leaves_whole_batches(tmp_path):
    """SIGKILL a writer between and inside transactions: the file is sound and holds whole
    batches only; collecting again completes without duplicates."""
    db = str(tmp_path / "killed.db")
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, "-c", WRITER, db], stdout=subprocess.PIPE, env=env)
    for _ in range(3):
        p.stdout.readline()  # three batches committed
    time.sleep(0.05)  # somewhere inside a later batch
    p.send_signal(signal.SIGKILL)
    p.wait()
    s = Store(db)
    assert s.check() == "ok"
    n = s.count()
    assert n >= 600 and n % 200 == 0
    again = s.insert([rec(i, "filler text " * 20) for i in range(n + 200)])
    assert (again.inserted, again.duplicates) == (200, n)
    assert s.count() == n + 200


def test_two_collectors_on_one_store(store, tmp_path):
    """Two writers with overlapping batches at once: each uri stored once, no errors."""
    import threading

    url = store.url if not store.sqlite else str(tmp_path / "data.db")
    errors = []

    def writer(offset: int) -> None:
        s = Store(url)
        try:
            for b in range(10):
                s.insert([rec(offset + b * 20 + j) for j in range(40)])  # half overlaps
        except Exception as exc:
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert store.count() == len({i for o in (0, 10) for b in range(10) for i in
                                 range(o + b * 20, o + b * 20 + 40)})  # fmt: skip
    assert store.check() == "ok"
    res = search(store, Query(keywords=["post"], limit=1000))
    assert res["count"] == store.count()  # the full-text index has each row once
