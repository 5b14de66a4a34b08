"""The published JSON Schemas are generated from the pydantic models: they accept what the
data layer really prints and refuse what it never would (test_cli.py validates the CLI's
own outputs end to end)."""

import copy

import pytest
from jsonschema import Draft202012Validator, ValidationError

from swarmpress.data.collect import collect
from swarmpress.data.jobs import JobSpec
from swarmpress.data.records import Record
from swarmpress.data.schema import SCHEMAS, schema
from swarmpress.data.store import Store
from tests.data.conftest import rec


def ok(name: str, doc) -> None:
    Draft202012Validator(schema(name)).validate(doc)


def refused(name: str, doc) -> None:
    with pytest.raises(ValidationError):
        ok(name, doc)


def manifest() -> dict:
    return {
        "format": "swarmpress-pack/1", "created": "2026-03-01T12:00:00Z", "records": 3,
        "sources": {"local": 3}, "labels": {}, "tokenizer": "/x/tokenizer.json",
        "time_span": ["2026-03-01T12:00:00+00:00", "2026-03-01T13:00:00+00:00"],
        "vocab_size": 30522, "seq_len": 64, "rows": 2, "tokens": 128,
        "dropped_tail_tokens": 5, "seed": 0, "shards": [{"file": "shard-00000.npy", "rows": 2}],
        "sha256": "0" * 64,
    }  # fmt: skip


def job_row() -> dict:
    spec = JobSpec(name="daily", sources=["local"], path="/tmp/x").model_dump()
    return {"name": "daily", "status": "done", "pid": None, "collected": 3, "rounds": 1,
            "cursor": None, "error": None, "started": 1.7e9, "updated": 1.7e9 + 5,
            "spec": spec}  # fmt: skip


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_schema_is_a_valid_2020_12_document(name):
    doc = schema(name)
    Draft202012Validator.check_schema(doc)
    assert doc["$id"].endswith(f"/{name}.json") and doc["title"] == f"swarmpress data {name}"


def test_the_record_schema_is_the_record_model():
    props = schema("record")["properties"]
    assert set(props) == set(Record.model_fields) | {"bucket"}
    assert props["source"]["pattern"] == Record.model_fields["source"].metadata[-1].pattern
    assert set(schema("record")["required"]) == set(props)  # label is printed even when null


def test_real_records_and_pages_validate_and_bad_ones_are_refused():
    good = rec(1).to_json()
    ok("record", good)
    ok("record", rec(2, label=None).to_json())
    ok("search", {"results": [good, rec(3).to_json()], "count": 2, "next_cursor": "abc"})
    ok("search", {"results": [], "count": 0, "next_cursor": None})
    for bad in ({k: v for k, v in good.items() if k != "bucket"}, good | {"extra": 1},
                good | {"source": "Not A Source"}, good | {"bucket": "7"},
                good | {"content": {"text": 5}}, good | {"size": -1}):  # fmt: skip
        refused("record", bad)
    refused("search", {"results": [good], "count": -1, "next_cursor": None})
    refused("search", {"results": [good], "count": 1})


def test_collect_stats_validate_and_bad_ones_are_refused(tmp_path):
    store = Store(str(tmp_path / "data.db"))
    try:
        stats = collect(store, [(rec(1), None), (None, "line 2: not JSON")], "local")
    finally:
        store.close()
    ok("collect", stats)
    refused("collect", stats | {"errors": ["e"] * 21})
    refused("collect", stats | {"inserted": -1})
    refused("collect", {k: v for k, v in stats.items() if k != "seconds"})


def test_pack_manifests_validate_and_bad_ones_are_refused():
    ok("pack", manifest())
    ok("pack", manifest() | {"time_span": None})
    refused("pack", manifest() | {"format": "swarmpress-pack/2"})
    refused("pack", manifest() | {"sha256": "XYZ"})
    refused("pack", manifest() | {"shards": []})
    refused("pack", manifest() | {"time_span": ["2026-03-01T12:00:00Z"]})
    bad = copy.deepcopy(manifest())
    bad["shards"][0]["extra"] = 1
    refused("pack", bad)


def test_job_results_and_listings_validate_and_bad_ones_are_refused():
    ok("job", {"job": "daily", "status": "stopped", "collected": 0, "rounds": 2, "resumed": True})
    refused("job", {"job": "daily", "status": "crashed", "collected": 0, "rounds": 2,
                    "resumed": True})  # fmt: skip
    ok("jobs", [job_row(), job_row() | {"status": "running", "pid": 123}])
    ok("jobs", [])
    refused("jobs", [job_row() | {"status": "zombie"}])
    refused("jobs", [job_row() | {"spec": job_row()["spec"] | {"sources": ["myspace"]}}])
    refused("jobs", job_row())


def test_unknown_schema_names_the_known_ones():
    with pytest.raises(KeyError, match="record"):
        schema("nope")
