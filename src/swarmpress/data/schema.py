"""JSON Schemas (draft 2020-12) of everything the data commands print, so people and agents
can rely on the shape: a record, `data search -o json`, `data collect --json`, a pack's
manifest.json, `data collect --job NAME --json` and `data jobs --json`.

The schemas are generated from pydantic models, never written by hand: a record from
`records.Record` (plus the `bucket` it prints), a job's spec from `jobs.JobSpec`, and the
outputs that are plain dicts (collect stats, pack manifest, job results) from the models
below, which say field by field what those dicts hold. Tests validate real outputs
against the generated schemas.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, computed_field

from swarmpress.data.jobs import JobSpec
from swarmpress.data.pack import FORMAT as PACK_FORMAT
from swarmpress.data.records import Record, bucket_of

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://swarmpress.dev/schemas/data"

Count = Annotated[int, Field(ge=0)]
CONTENT_TEXT = ("text", "title", "author")  # content keys that, where present, are text


class _Output(BaseModel):
    """Something a command prints: no other keys, and every key always present (a field
    with a default is still printed, so the schema requires it)."""

    model_config = ConfigDict(extra="forbid", json_schema_serialization_defaults_required=True)


class PrintedRecord(Record):
    """A record as `Record.to_json` prints it: the Record fields and its hour bucket."""

    model_config = ConfigDict(json_schema_serialization_defaults_required=True)

    content: dict[str, Any] = Field(
        description="as the source has it: text, title, author, scores, parent, media",
        json_schema_extra={"properties": {k: {"type": "string"} for k in CONTENT_TEXT}},
    )

    @computed_field(description="hours since the Unix epoch")  # type: ignore[prop-decorator]
    @property
    def bucket(self) -> int:
        return bucket_of(self.datetime)


class SearchPage(_Output):
    """One page of `data search -o json`."""

    results: list[PrintedRecord]
    count: Count
    next_cursor: str | None = Field(
        description="pass as --cursor for the next page; null on the last page"
    )


class CollectStats(_Output):
    """What `data collect --json` prints (collect.collect's summary)."""

    source: str
    store: str
    read: Count
    inserted: Count
    duplicates: Count
    skipped: Count = Field(description="bad items, not stored")
    evicted: Count = Field(description="oldest, over the cap")
    errors: list[str] = Field(max_length=20)
    records_in_store: Count
    seconds: float = Field(ge=0)


class PackShard(_Output):
    file: str
    rows: int


class PackManifest(_Output):
    """A pack's manifest.json (pack.pack's result)."""

    format: Literal[PACK_FORMAT]
    created: datetime
    records: int = Field(ge=1)
    sources: dict[str, int]
    labels: dict[str, int]
    time_span: tuple[datetime, datetime] | None
    tokenizer: str
    vocab_size: int = Field(ge=1)
    seq_len: int = Field(ge=2)
    rows: int = Field(ge=1)
    tokens: int = Field(ge=2)
    dropped_tail_tokens: Count
    seed: int
    shards: list[PackShard] = Field(min_length=1)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class JobResult(_Output):
    """What `data collect --job NAME --json` prints when the job ends."""

    job: str
    status: Literal["done", "stopped", "failed"]
    collected: Count = Field(description="over all its runs")
    rounds: Count
    resumed: bool = Field(description="it continued an earlier run")


class JobRow(_Output):
    """One job as `data jobs --json` lists it (jobs.list_jobs)."""

    name: str
    status: Literal["new", "running", "crashed", "done", "stopped", "failed"]
    pid: int | None
    collected: Count
    rounds: Count
    cursor: str | None = Field(description="JSON: source -> cursor")
    error: str | None
    started: float = Field(description="Unix seconds")
    updated: float = Field(description="Unix seconds")
    spec: JobSpec


# name -> (the type that describes it, a description for the document)
SCHEMAS: dict[str, tuple[Any, str]] = {
    "record": (PrintedRecord, "a record as every data command prints it"),
    "search": (SearchPage, "what `data search -o json` prints, one page"),
    "collect": (CollectStats, "what `data collect --json` prints"),
    "pack": (PackManifest, "a pack's manifest.json"),
    "job": (JobResult, "what `data collect --job NAME --json` prints when the job ends"),
    "jobs": (list[JobRow], "what `data jobs --json` prints"),
}


def schema(name: str) -> dict[str, Any]:
    """The full schema document for one output; KeyError listing the names otherwise."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMAS)}")
    kind, description = SCHEMAS[name]
    body = TypeAdapter(kind).json_schema(mode="serialization")
    body.pop("title", None)
    return {"$schema": DRAFT, "$id": f"{BASE}/{name}.json", "title": f"swarmpress data {name}",
            "description": description, **body}  # fmt: skip
