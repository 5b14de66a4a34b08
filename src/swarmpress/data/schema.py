"""JSON Schemas (draft 2020-12) of everything the data commands print, so people and agents
can rely on the shape: a record, `data search -o json`, `data collect --json`, and a pack's
manifest.json. Tests validate real outputs against them."""

from __future__ import annotations

from typing import Any

DRAFT = "https://json-schema.org/draft/2020-12/schema"
BASE = "https://swarmpress.dev/schemas/data"

_TIME = {"type": "string", "format": "date-time"}

RECORD: dict[str, Any] = {
    "type": "object",
    "required": ["uri", "datetime", "source", "label", "content", "size", "scraped_at", "bucket"],
    "additionalProperties": False,
    "properties": {
        "uri": {"type": "string", "minLength": 1, "description": "unique; the dedup key"},
        "datetime": _TIME | {"description": "the item's own time, UTC"},
        "source": {"type": "string", "pattern": "^[a-z][a-z0-9_-]*$"},
        "label": {"type": ["string", "null"], "description": "r/name or #tag, lowercased"},
        "content": {
            "type": "object",
            "description": "as the source has it: text, title, author, scores, parent, media",
            "properties": {
                "text": {"type": "string"},
                "title": {"type": "string"},
                "author": {"type": "string"},
            },
        },
        "size": {"type": "integer", "minimum": 0, "description": "bytes of content JSON"},
        "scraped_at": _TIME,
        "bucket": {"type": "integer", "description": "hours since the Unix epoch"},
    },
}

SEARCH: dict[str, Any] = {
    "type": "object",
    "required": ["results", "count", "next_cursor"],
    "additionalProperties": False,
    "properties": {
        "results": {"type": "array", "items": {"$ref": "#/$defs/record"}},
        "count": {"type": "integer", "minimum": 0},
        "next_cursor": {
            "type": ["string", "null"],
            "description": "pass as --cursor for the next page; null on the last page",
        },
    },
    "$defs": {"record": RECORD},
}

COLLECT: dict[str, Any] = {
    "type": "object",
    "required": [
        "source",
        "store",
        "read",
        "inserted",
        "duplicates",
        "skipped",
        "evicted",
        "errors",
        "records_in_store",
        "seconds",
    ],
    "additionalProperties": False,
    "properties": {
        "source": {"type": "string"},
        "store": {"type": "string"},
        "read": {"type": "integer", "minimum": 0},
        "inserted": {"type": "integer", "minimum": 0},
        "duplicates": {"type": "integer", "minimum": 0},
        "skipped": {"type": "integer", "minimum": 0, "description": "bad items, not stored"},
        "evicted": {"type": "integer", "minimum": 0, "description": "oldest, over the cap"},
        "errors": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
        "records_in_store": {"type": "integer", "minimum": 0},
        "seconds": {"type": "number", "minimum": 0},
    },
}

PACK: dict[str, Any] = {
    "type": "object",
    "required": [
        "format",
        "created",
        "records",
        "sources",
        "labels",
        "time_span",
        "tokenizer",
        "vocab_size",
        "seq_len",
        "rows",
        "tokens",
        "dropped_tail_tokens",
        "seed",
        "shards",
        "sha256",
    ],
    "additionalProperties": False,
    "properties": {
        "format": {"const": "swarmpress-pack/1"},
        "created": _TIME,
        "records": {"type": "integer", "minimum": 1},
        "sources": {"type": "object", "additionalProperties": {"type": "integer"}},
        "labels": {"type": "object", "additionalProperties": {"type": "integer"}},
        "time_span": {"type": ["array", "null"], "items": _TIME, "minItems": 2, "maxItems": 2},
        "tokenizer": {"type": "string"},
        "vocab_size": {"type": "integer", "minimum": 1},
        "seq_len": {"type": "integer", "minimum": 2},
        "rows": {"type": "integer", "minimum": 1},
        "tokens": {"type": "integer", "minimum": 2},
        "dropped_tail_tokens": {"type": "integer", "minimum": 0},
        "seed": {"type": "integer"},
        "shards": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["file", "rows"],
                "additionalProperties": False,
                "properties": {"file": {"type": "string"}, "rows": {"type": "integer"}},
            },
        },
        "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
    },
}

JOB: dict[str, Any] = {
    "type": "object",
    "description": "what `data collect --job NAME --json` prints when the job ends",
    "required": ["job", "status", "collected", "rounds", "resumed"],
    "additionalProperties": False,
    "properties": {
        "job": {"type": "string"},
        "status": {"enum": ["done", "stopped", "failed"]},
        "collected": {"type": "integer", "minimum": 0, "description": "over all its runs"},
        "rounds": {"type": "integer", "minimum": 0},
        "resumed": {"type": "boolean", "description": "it continued an earlier run"},
    },
}

JOBS: dict[str, Any] = {
    "type": "array",
    "description": "what `data jobs --json` prints",
    "items": {
        "type": "object",
        "required": [
            "name",
            "status",
            "pid",
            "collected",
            "rounds",
            "cursor",
            "error",
            "started",
            "updated",
            "spec",
        ],
        "additionalProperties": False,
        "properties": {
            "name": {"type": "string"},
            "status": {"enum": ["new", "running", "crashed", "done", "stopped", "failed"]},
            "pid": {"type": ["integer", "null"]},
            "collected": {"type": "integer", "minimum": 0},
            "rounds": {"type": "integer", "minimum": 0},
            "cursor": {"type": ["string", "null"], "description": "JSON: source -> cursor"},
            "error": {"type": ["string", "null"]},
            "started": {"type": "number", "description": "Unix seconds"},
            "updated": {"type": "number", "description": "Unix seconds"},
            "spec": {"type": "object", "required": ["name", "sources"]},
        },
    },
}

SCHEMAS = {"record": RECORD, "search": SEARCH, "collect": COLLECT, "pack": PACK, "job": JOB,
           "jobs": JOBS}  # fmt: skip


def schema(name: str) -> dict[str, Any]:
    """The full schema document for one output; KeyError listing the names otherwise."""
    if name not in SCHEMAS:
        raise KeyError(f"no schema {name!r}; known: {', '.join(SCHEMAS)}")
    return {"$schema": DRAFT, "$id": f"{BASE}/{name}.json", "title": f"swarmpress data {name}",
            **SCHEMAS[name]}  # fmt: skip
