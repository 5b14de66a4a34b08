"""`swarmpress data ...` end to end on the embedded text: collect, search in every output
format (validated against the published JSON Schemas), pack, and the swarm reading a pack."""

import csv
import io
import json

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


def test_a_store_that_is_not_a_database_exits_2(tmp_path):
    bad = tmp_path / "not.db"
    bad.write_text("hello, I am a text file, not SQLite" * 100)
    r = run("data", "search", "all", "--store", str(bad))
    assert r.exit_code == 2 and "store" in r.output
    r = run("data", "search", "all", "--store", "mysql+nodriver://u:secret@h/db")
    assert r.exit_code == 2 and "secret" not in r.output
