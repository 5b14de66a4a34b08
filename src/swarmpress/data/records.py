"""One record schema for every item the data layer holds, whatever its source.

A record is a uri (unique: the dedup key), the item's own time in UTC, its source
(`reddit`, `x`, `local`, ...), a label (a subreddit `r/name` or a first hashtag `#tag`,
lowercased), the content as a JSON object (author, text, title, scores, parent, media ...,
as the source has them), its size in bytes (of the content's JSON) and when it was scraped.
Records are bucketed by hour of their own time. `parse_record` turns anything a source or a
JSONL line hands over into a Record or a RecordError that says which field is wrong.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swarmpress.errors import UsageError

MAX_CONTENT = 1 << 20  # bytes of content JSON one record may hold


class RecordError(UsageError, ValueError):
    """An item that is not a valid record; the message names the field."""


def _to_utc(value: Any) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            dt = datetime.fromtimestamp(float(value), UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{value!r} is not a valid Unix time") from None
    elif isinstance(value, str) and value.strip():
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        try:
            dt = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 time") from None
    else:
        raise ValueError(f"{value!r} is not a time")
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)  # a naive time is taken as UTC, as the sources write it
    return dt.astimezone(UTC)


def parse_time(value: Any, field: str = "datetime") -> datetime:
    """A UTC datetime from ISO 8601 text, a datetime, or Unix seconds; RecordError if not."""
    try:
        return _to_utc(value)
    except ValueError as exc:
        raise RecordError(f"{field}: {exc}") from None


def bucket_of(dt: datetime) -> int:
    """The hour bucket: whole hours since the Unix epoch."""
    return int(dt.timestamp() // 3600)


def normalize_label(label: str | None) -> str | None:
    """Lowercased, trimmed; `r/` and `#` prefixes kept; empty becomes None."""
    if label is None:
        return None
    text = label.strip().lower()
    return text or None


class Record(BaseModel):
    """An item as stored: see the module docstring."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    uri: str = Field(min_length=1, max_length=2048, description="unique; the dedup key")
    datetime: Annotated[datetime, Field(description="the item's own time, UTC")]
    source: str = Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_-]*$")
    label: str | None = Field(None, max_length=256, description="r/name or #tag, lowercased")
    content: dict[str, Any] = Field(
        description="as the source has it: text, title, author, scores, parent, media"
    )
    size: int = Field(ge=0, description="bytes of content JSON")
    scraped_at: Annotated[datetime, Field(description="when it was read, UTC")]

    @field_validator("datetime", "scraped_at", mode="before")
    @classmethod
    def _utc(cls, v: Any) -> datetime:
        return _to_utc(v)

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v: Any) -> str | None:
        if v is not None and not isinstance(v, str):
            raise ValueError("must be text")
        return normalize_label(v)

    @property
    def bucket(self) -> int:
        return bucket_of(self.datetime)

    @property
    def text(self) -> str:
        """The searchable text: title and body as the content has them."""
        parts = [self.content.get(k) for k in ("title", "text")]
        return "\n".join(p for p in parts if isinstance(p, str) and p)

    def to_json(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "datetime": self.datetime.isoformat().replace("+00:00", "Z"),
            "source": self.source,
            "label": self.label,
            "content": self.content,
            "size": self.size,
            "scraped_at": self.scraped_at.isoformat().replace("+00:00", "Z"),
            "bucket": self.bucket,
        }


def content_json(content: dict[str, Any]) -> str:
    """The content as compact, key-sorted JSON (what `size` counts and the store keeps)."""
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def make_record(
    uri: str,
    when: Any,
    source: str,
    content: dict[str, Any],
    label: str | None = None,
    scraped_at: Any = None,
) -> Record:
    """A Record from a source's fields, size computed; RecordError naming the bad field."""
    if not isinstance(content, dict):
        raise RecordError(f"content: must be a JSON object, not {type(content).__name__}")
    return parse_record({
        "uri": uri, "datetime": when, "source": source, "label": label, "content": content,
        "scraped_at": scraped_at if scraped_at is not None else datetime.now(UTC),
    })  # fmt: skip


def first_error(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line naming the field: `field: rule`."""
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or what
    return f"{where}: {e['msg'].removeprefix('Value error, ')}"


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def parse_record(raw: Any) -> Record:
    """A Record from a dict (a JSONL line, an export); `size` is always computed here (a
    line's own claim is ignored), `scraped_at` may be missing (now); RecordError naming the
    first bad field."""
    if not isinstance(raw, dict):
        raise RecordError(f"a record is a JSON object, not {type(raw).__name__}")
    data = {k: v for k, v in raw.items() if k != "bucket"}  # derived, as exports write it
    if isinstance(data.get("content"), dict):
        try:
            body = content_json(data["content"])
        except (TypeError, ValueError) as exc:
            raise RecordError(f"content: not JSON-serializable ({exc})") from None
        if _has_nul(data["content"]):  # PostgreSQL text cannot hold one
            raise RecordError("content: contains a NUL character")
        data["size"] = len(body.encode("utf-8"))  # always ours, whatever a line claims
        if data["size"] > MAX_CONTENT:
            raise RecordError(f"content: {data['size']} bytes exceeds the {MAX_CONTENT}-byte limit")
    for key in ("uri", "label", "source"):
        if isinstance(data.get(key), str) and "\x00" in data[key]:
            raise RecordError(f"{key}: contains a NUL character")
    data.setdefault("scraped_at", datetime.now(UTC))
    try:
        return Record.model_validate(data)
    except RecordError:
        raise
    except ValidationError as exc:
        raise RecordError(first_error(exc, "record")) from None
