"""`swarmpress data ...` end to end on the embedded text: collect, search in every output
format (validated against the published JSON Schemas), pack, and the swarm reading a pack."""

import csv
import errno
import io
import json
import os

import numpy as np
import pytest
from jsonschema import Draft202012Validator
from typer.testing import CliRunner

from swarmpress.cli import app
from swarmpress.data.pack import PackError, load_pack
from swarmpress.data.schema import SCHEMAS, schema

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, list(args))


def validate(name: str, doc) -> None:
    Draft202012Validator(schema(name)).validate(doc)


@pytest.fixture(scope="module")
def filled(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("store") / "data.db")
    r = run("data", "collect", "--source", "local", "--store", db, "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)
    validate("collect", stats)
    assert stats["inserted"] == stats["read"] > 50 and stats["skipped"] == 0
    return db


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schemas_are_valid_2020_12(name):
    r = run("data", "schema", name)
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert doc["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(doc)


def test_unknown_schema_and_source():
    assert run("data", "schema", "nope").exit_code == 2
    r = run("data", "collect", "--source", "myspace")
    assert r.exit_code == 2 and "unknown source" in r.output


def test_search_json_pages_validate(filled):
    r = run("data", "search", "local", "-k", "class", "-l", "7", "-o", "json", "--store", filled)
    assert r.exit_code == 0, r.output
    page = json.loads(r.stdout)
    validate("search", page)
    assert page["count"] == 7 and page["next_cursor"]
    r2 = run("data", "search", "local", "-k", "class", "-l", "7", "-o", "json",
             "--cursor", page["next_cursor"], "--store", filled)  # fmt: skip
    page2 = json.loads(r2.stdout)
    validate("search", page2)
    assert not {x["uri"] for x in page["results"]} & {x["uri"] for x in page2["results"]}


def test_search_jsonl_csv_table(filled):
    r = run("data", "search", "all", "-k", "lambda", "-o", "jsonl", "--store", filled)
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.strip()]
    assert lines
    for line in lines:
        validate("record", line)
    r = run("data", "search", "local", "-k", "lambda", "-o", "csv", "--store", filled)
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert len(rows) == len(lines) and "lambda" in (rows[0]["text"] + rows[0]["title"]).lower()
    r = run("data", "search", "local", "-k", "lambda", "--store", filled)
    assert r.exit_code == 0 and "records" in r.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--cursor", "zzz"], "--cursor"),
        (["--from", "someday"], "--from"),
        (["--mode", "most"], "--mode"),
        (["-o", "xml"], "-o must be"),
        (["-l", "0"], "--limit"),
    ],
)
def test_search_bad_input_exits_2(filled, args, needle):
    r = run("data", "search", "local", *args, "--store", filled)
    assert r.exit_code == 2 and needle in r.output


def test_pack_feeds_the_swarm(filled, tmp_path):
    from swarmpress.swarm.text import DataError, TokenData

    out = tmp_path / "pack"
    r = run("data", "pack", "--out", str(out), "--seq-len", "128", "--store", filled, "--json")
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout)
    validate("pack", manifest)
    _, rows = load_pack(out)
    assert rows.shape == (manifest["rows"], 128) and rows.dtype == np.int32
    assert manifest["sources"] == {"local": manifest["records"]}
    data = TokenData.build(str(out))
    assert data.ids.max() < data.vocab and data.ids.size == rows.size
    assert run("data", "pack", "--out", str(out), "--store", filled).exit_code == 2  # not empty
    shard = out / manifest["shards"][0]["file"]
    arr = np.load(shard)
    arr[0, 0] += 1
    np.save(shard, arr)
    with pytest.raises(PackError, match="sha256"):
        load_pack(out)
    with pytest.raises(DataError, match="sha256"):
        TokenData.build(str(out))


def test_export_parquet_and_jsonl_round_trip(filled, tmp_path):
    import pyarrow.parquet as pq

    from swarmpress.data.sources.local import read_local

    pq_out, jl_out = tmp_path / "all.parquet", tmp_path / "lambda.jsonl"
    r = run("data", "export", "--out", str(pq_out), "--store", filled, "--json")
    assert r.exit_code == 0, r.output
    n = json.loads(r.stdout)["records"]
    table = pq.read_table(pq_out)
    assert table.num_rows == n > 50
    assert table.schema.field("datetime").type.tz == "UTC"
    first = table.slice(0, 1).to_pylist()[0]
    assert json.loads(first["content"])["text"]
    r = run("data", "export", "--out", str(jl_out), "-k", "lambda", "--store", filled)
    assert r.exit_code == 0, r.output
    back = [rec for rec, err in read_local(jl_out) if rec]  # an export reads back as records
    assert back and all("lambda" in x.text.lower() for x in back)
    assert run("data", "export", "--out", str(jl_out), "--store", filled).exit_code == 2
    bad = run("data", "export", "--out", str(tmp_path / "x.csv"), "--store", filled)
    assert bad.exit_code == 2 and "parquet or jsonl" in bad.output
    assert not list(tmp_path.glob("*.partial"))


def test_export_never_touches_a_file_or_link_beside_its_output(filled, tmp_path, monkeypatch):
    """The temporary file is a new one of a unique name: a user's `OUT.partial` is kept, a
    link there is not followed, and a failed write leaves no file behind."""
    mine = tmp_path / "f.jsonl.partial"
    mine.write_text("mine")
    victim = tmp_path / "victim.txt"
    victim.write_text("victim")
    (tmp_path / "g.jsonl.partial").symlink_to(victim)
    for name in ("f.jsonl", "g.jsonl"):
        r = run("data", "export", "--out", str(tmp_path / name), "--store", filled)
        assert r.exit_code == 0, r.output
        assert not (tmp_path / name).is_symlink() and (tmp_path / name).read_text().count("\n") > 50
    assert mine.read_text() == "mine" and victim.read_text() == "victim"
    assert (tmp_path / "g.jsonl.partial").is_symlink()
    (tmp_path / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    r = run("data", "export", "--out", str(tmp_path / "dangling.jsonl"), "--store", filled)
    assert r.exit_code == 2 and "exists" in r.output and not (tmp_path / "nowhere.jsonl").exists()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    r = run("data", "export", "--out", str(tmp_path / "h.parquet"), "--store", filled)
    assert r.exit_code == 2 and "No space left on device" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dangling.jsonl", "f.jsonl", "f.jsonl.partial", "g.jsonl", "g.jsonl.partial",
        "victim.txt"]  # fmt: skip


def test_commands_catalog_lists_every_command():
    r = run("commands", "--json")
    assert r.exit_code == 0
    cat = {c["command"]: c for c in json.loads(r.stdout)}
    for name in ("swarmpress data search", "swarmpress data collect", "swarmpress swarm train",
                 "swarmpress twin run", "swarmpress bench"):  # fmt: skip
        assert name in cat
    search_params = {p["name"]: p for p in cat["swarmpress data search"]["params"]}
    assert search_params["source"]["kind"] == "argument"
    assert search_params["limit"]["default"] == 50 and search_params["limit"]["type"] == "integer"
    assert "--cursor" in search_params["cursor"]["flags"]
    assert search_params["keywords"]["multiple"]


def test_search_live_fetches_first(server, tmp_path, monkeypatch):
    from tests.data.conftest import listing, post

    monkeypatch.setenv("SWARMPRESS_REDDIT_URL", server.url)
    server.add("/search.json", 200, listing([post(1), post(2)], None))
    db = str(tmp_path / "live.db")
    r = run("data", "search", "reddit", "-k", "body", "--live", "-o", "json", "--store", db)
    assert r.exit_code == 0, r.output
    page = json.loads(r.stdout)
    validate("search", page)
    assert [x["content"]["title"] for x in page["results"]] == ["Post 2", "Post 1"]
    assert server.log[0][1]["q"] == ["body"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["search", "local", "--from", "1000000d"], "year 1"),
        (["search", "local", "-k", "!!!"], "no letters"),
        (["collect", "--limit", "0"], "limit"),
        (["collect", "--source", "local,reddit"], "--job"),
        (["pack", "--out", "/proc/nope/pack"], "cannot write"),
        (["pack", "--out", "PACKFILE"], "not an empty folder"),
        (["pack", "--out", "EMPTYDIR", "--seed", "-1"], "--seed"),
        (["export", "--out", "/proc/nope.jsonl"], "cannot write"),
    ],
)
def test_data_bad_input_exits_2(filled, tmp_path, args, needle):
    (tmp_path / "file").write_text("x")
    args = [a.replace("PACKFILE", str(tmp_path / "file")).replace("EMPTYDIR", str(tmp_path / "e"))
            for a in args]  # fmt: skip
    r = run("data", *args, "--store", filled)
    assert r.exit_code == 2, r.output
    assert needle in r.output


@pytest.mark.parametrize("flag", ["--from", "--to"])
@pytest.mark.parametrize("when", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
@pytest.mark.parametrize("command", [["search", "all"], ["export", "--out", "OUT/x.jsonl"],
                                     ["pack", "--out", "OUT/pack"]])  # fmt: skip
def test_times_past_the_ends_of_the_calendar_exit_2(filled, tmp_path, command, when, flag):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in command]
    r = run("data", *args, flag, when, "--store", filled)
    assert r.exit_code == 2, r.output
    assert f"{flag}: {when!r} is outside years 1-9999" in r.output.replace("\n", "")
    assert not (tmp_path / "out").exists()


def test_a_store_that_is_not_a_database_exits_2(tmp_path):
    bad = tmp_path / "not.db"
    bad.write_text("hello, I am a text file, not SQLite" * 100)
    r = run("data", "search", "all", "--store", str(bad))
    assert r.exit_code == 2 and "store" in r.output
    r = run("data", "search", "all", "--store", "mysql+nodriver://u:secret@h/db")
    assert r.exit_code == 2 and "secret" not in r.output


# ---------------------------------------------------------------- refusals (issue 16)
@pytest.mark.parametrize(
    "args",
    [
        ["search", "all"],
        ["search", "local", "-k", "x", "-o", "json"],
        ["export", "--out", "OUT/all.jsonl"],
        ["pack", "--out", "OUT/pack"],
        ["jobs"],
    ],
)
def test_a_missing_store_is_refused_not_created(tmp_path, args):
    """Reading a store that is not there is a mistake (a typo in --store), not an empty
    store: exit 2 naming it, and nothing created."""
    missing = tmp_path / "nope" / "data.db"
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    r = run("data", *args, "--store", str(missing))
    assert r.exit_code == 2, r.output
    assert "no store" in r.output and str(missing) in r.output.replace("\n", "")
    assert not (tmp_path / "nope").exists() and not (tmp_path / "out").exists()


def test_a_missing_store_from_the_environment_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SWARMPRESS_DATA_STORE", str(tmp_path / "env.db"))
    r = run("data", "search", "all")
    assert r.exit_code == 2 and "no store" in r.output
    assert not (tmp_path / "env.db").exists()


def test_a_postgresql_url_is_a_store_not_a_path(pg_url):
    r = run("data", "search", "all", "-o", "json", "--store", pg_url)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == 0


@pytest.mark.parametrize(
    "args",
    [
        ["search", "nosuch"],
        ["search", "nosuch", "--live"],
        ["search", "Local"],
        ["export", "--out", "OUT/x.jsonl", "--source", "nosuch"],
        ["pack", "--out", "OUT/pack", "--source", "nosuch"],
    ],
)
def test_unknown_sources_are_refused_like_collect_does(filled, tmp_path, args):
    args = [a.replace("OUT", str(tmp_path / "out")) for a in args]
    r = run("data", *args, "--store", filled)
    assert r.exit_code == 2, r.output
    assert "unknown source" in r.output and "local, reddit, x" in r.output
    assert not (tmp_path / "out").exists()
    collect = run("data", "collect", "--source", "nosuch", "--store", filled)
    assert collect.exit_code == 2 and "local, reddit, x" in collect.output


def test_a_stored_source_outside_the_registry_is_searchable(tmp_path):
    """Full records read from JSONL may carry any source name; those the store holds
    stay searchable by name."""
    f = tmp_path / "hn.jsonl"
    f.write_text(json.dumps({"uri": "https://news.example/1", "datetime": "2026-01-01T00:00:00Z",
                             "source": "hn", "content": {"text": "a story"}}) + "\n")  # fmt: skip
    db = str(tmp_path / "s.db")
    r = run("data", "collect", "--source", "local", "--path", str(f), "--store", db)
    assert r.exit_code == 0, r.output
    r = run("data", "search", "hn", "-o", "json", "--store", db)
    assert r.exit_code == 0, r.output
    assert [x["source"] for x in json.loads(r.stdout)["results"]] == ["hn"]
    r = run("data", "search", "hm", "--store", db)
    assert r.exit_code == 2 and "unknown source 'hm'" in r.output and "hn" in r.output


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


BAD_CURSORS = {
    "not base64": "!!!",
    "markup": "[/x]",
    "non-ASCII": "curs\u00f6r",
    "control characters": "ab\x1b[31m",
    "one char too many": "a",
    "padding only": "====",
    "not UTF-8": _b64(b"\xff\xfe\xfd"),
    "not JSON": _b64(b"[1, 2"),
    "an object": _b64(b'{"a": 1, "b": 2}'),
    "three items": _b64(b"[1, 2, 3]"),
    "one item": _b64(b"[1]"),
    "a string": _b64(b'"\\ud800"'),
    "NaN": _b64(b"NaN"),
    "floats": _b64(b"[1.5, 2]"),
    "booleans": _b64(b"[true, 1]"),
    "strings": _b64(b'["1", 2]'),
    "a negative id": _b64(b"[-1, -5]"),
    "id zero": _b64(b"[1000, 0]"),
    "a huge time": _b64(b"[1000000000000000000000000000000, 1]"),
    "a huge id": _b64(b"[1, 1000000000000000000000000000000]"),
    "2**63": _b64(str([2**63, 1]).encode()),
    "deep nesting": _b64(b"[" * 5000 + b"]" * 5000),
    "10**5000": _b64(b"[" + b"9" * 5000 + b", 1]"),
    "very long": "A" * 100_000,
}


@pytest.mark.parametrize("cursor", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_malformed_cursor_exits_2_naming_it(filled, cursor):
    r = run("data", "search", "all", "-l", "1", "-o", "json", "--cursor", cursor, "--store", filled)
    assert r.exit_code == 2, r.output
    assert "--cursor" in r.output and "internal error" not in r.output


def test_a_cursor_at_the_edges_of_time_is_accepted(filled):
    for ts in (-62135596800 * 10**6, 253402300799 * 10**6):
        cursor = _b64(json.dumps([ts, 1]).encode())
        r = run("data", "search", "all", "-o", "json", "--cursor", cursor, "--store", filled)
        assert r.exit_code == 0, r.output


def test_bad_lines_are_counted_in_both_outputs(tmp_path):
    """Every kind of broken JSONL line is skipped and counted, the rest stored, and the
    skipped lines are shown as text (a path with brackets is not rich markup)."""
    folder = tmp_path / "[bold]notes[red]"
    folder.mkdir()
    f = folder / "mixed.jsonl"
    f.write_bytes(b'{"text": "first"}\n{"text": "\\ud800"}\n' + b"[" * 1000 + b"\n"
                  b'{"text": "x", "s": NaN}\n\xff\xfe\n{"text": "last"}\n')  # fmt: skip
    db = str(tmp_path / "s.db")
    r = run("data", "collect", "--source", "local", "--path", str(f), "--store", db, "--json")
    assert r.exit_code == 0, r.output
    stats = json.loads(r.stdout)
    validate("collect", stats)
    assert (stats["read"], stats["inserted"], stats["skipped"]) == (6, 2, 4)
    assert len(stats["errors"]) == 4 and all(str(f) in e for e in stats["errors"])
    r = run("data", "collect", "--source", "local", "--path", str(f), "--store", db)
    assert r.exit_code == 0, r.output
    # the path is printed literally (rich may wrap it: a longer temp path under xdist)
    assert "[bold]notes[red]" in r.output.replace("\n", "") and r.output.count("skipped:") == 4


def test_reddit_without_network_fails_at_once(tmp_path, monkeypatch):
    """A host that cannot resolve is no network: said at once, not retried for 36 s."""
    import swarmpress.data.sources.http as http

    sleeps: list[float] = []
    monkeypatch.setattr(http, "_sleep", sleeps.append)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                "all_proxy"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("SWARMPRESS_REDDIT_URL", "http://swarmpress-test.invalid")
    r = run("data", "collect", "--source", "reddit", "--store", str(tmp_path / "s.db"))
    assert r.exit_code == 1, r.output
    assert "no network" in r.output and "swarmpress-test.invalid" in r.output
    assert sleeps == []
