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
import math
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from swarmpress.errors import UsageError

MAX_CONTENT = 1 << 20  # bytes of content JSON one record may hold
MAX_DEPTH = 100  # JSON nesting a record's content (and a JSONL line) may have
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")  # NUL (PostgreSQL text) or a lone surrogate


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
    try:
        return dt.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00, 9999-12-31T23:59-01:00
        raise ValueError(f"{value!r} is outside years 1-9999 in UTC") from None


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
    return json.dumps(
        content, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    )


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:20]}{'...' if len(text) > 20 else ''} is out of range")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"duplicate key {dup!r}")
    return obj


def strict_loads(text: str | bytes) -> Any:
    """JSON from untrusted text (a JSONL line, a cursor): strict UTF-8, standard JSON only
    (no NaN or Infinity, no number beyond a float, no duplicate key), nesting at most
    MAX_DEPTH; ValueError (a RecordError) that says what is wrong, never another error."""
    if isinstance(text, bytes | bytearray):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite,
                           object_pairs_hook=_unique_keys)  # fmt: skip
    except RecursionError:
        raise RecordError(f"not JSON (nested deeper than {MAX_DEPTH})") from None
    except ValueError as exc:  # JSONDecodeError, a hook's refusal, an int beyond 4300 digits
        raise RecordError(f"not JSON ({str(exc)[:100]})") from None
    problem = json_problem(value, MAX_DEPTH + 1)  # a line's record holds content one deeper
    if problem:
        raise RecordError(problem)
    return value


def _scalar_problem(v: Any) -> str | None:
    if isinstance(v, str):
        m = _BAD_CHAR.search(v)
        if m is None:
            return None
        if m.group() == "\x00":
            return "contains a NUL character"
        return f"contains a lone surrogate (U+{ord(m.group()):04X}), not UTF-8 text"
    if isinstance(v, float):
        return None if math.isfinite(v) else f"{v!r} is not a JSON number"
    if v is None or isinstance(v, bool | int):
        return None
    return f"not JSON-serializable (a Python {type(v).__name__})"


def _at(where: str, path: list[Any], problem: str) -> str:
    at = where
    for p in path:
        at += f"[{p}]" if isinstance(p, int) else f".{p}" if at else str(p)
    return f"{printable(at, 80)}: {problem}" if at else problem


def json_problem(value: Any, max_depth: int = MAX_DEPTH, where: str = "") -> str | None:
    """What makes `value` unfit to store as JSON text, or None: nesting deeper than
    `max_depth`, a NUL or a lone surrogate in a string or key, a float that is not finite,
    a type JSON has no form for; said with where it is (`content.scores[2]: ...`).
    Depth-first with one iterator per level: memory grows with the depth, not the size."""
    if not isinstance(value, dict | list | tuple):
        problem = _scalar_problem(value)
        return _at(where, [], problem) if problem else None
    if max_depth < 1:
        return _at(where, [], f"nested deeper than {max_depth} levels")
    path: list[Any] = []  # the key or index of each open container below the top
    stack = [(iter(value.items()) if isinstance(value, dict) else enumerate(value),
              isinstance(value, dict))]  # fmt: skip
    while stack:
        items, is_dict = stack[-1]
        for k, v in items:
            if is_dict:
                if not isinstance(k, str):
                    kind = type(k).__name__
                    return _at(where, path, f"not JSON-serializable (a key of type {kind})")
                problem = _scalar_problem(k)
                if problem:
                    return _at(where, path, f"a key {problem}")
            if isinstance(v, dict | list | tuple):
                if len(stack) >= max_depth:
                    return _at(where, [*path, k], f"nested deeper than {max_depth} levels")
                path.append(k)
                stack.append((iter(v.items()) if isinstance(v, dict) else enumerate(v),
                              isinstance(v, dict)))  # fmt: skip
                break
            problem = _scalar_problem(v)
            if problem:
                return _at(where, [*path, k], problem)
        else:
            stack.pop()
            if path:
                path.pop()
    return None


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


def printable(message: str, limit: int = 500) -> str:
    """A message safe to print, store and send as JSON: lone surrogates and control
    characters shown as escapes, at most `limit` characters."""
    message = message[: limit * 2].encode("utf-8", "backslashreplace").decode("utf-8")
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)[:limit]


def first_error(exc: ValidationError, what: str) -> str:
    """A pydantic error as one line naming the field: `field: rule`."""
    e = exc.errors()[0]
    where = ".".join(str(p) for p in e["loc"]) or what
    return f"{where}: {e['msg'].removeprefix('Value error, ')}"


def parse_record(raw: Any) -> Record:
    """A Record from a dict (a JSONL line, an export); `size` is always computed here (a
    line's own claim is ignored), `scraped_at` may be missing (now); RecordError naming the
    first bad field."""
    if not isinstance(raw, dict):
        raise RecordError(f"a record is a JSON object, not {type(raw).__name__}")
    data = {k: v for k, v in raw.items() if k != "bucket"}  # derived, as exports write it
    if isinstance(data.get("content"), dict):
        problem = json_problem(data["content"], where="content")  # first: content_json recurses
        if problem:
            raise RecordError(problem)
        try:
            body = content_json(data["content"])
        except (TypeError, ValueError) as exc:
            raise RecordError(f"content: not JSON-serializable ({str(exc)[:100]})") from None
        data["size"] = len(body.encode("utf-8"))  # always ours, whatever a line claims
        if data["size"] > MAX_CONTENT:
            raise RecordError(f"content: {data['size']} bytes exceeds the {MAX_CONTENT}-byte limit")
    for key in ("uri", "label", "source"):
        if isinstance(data.get(key), str) and _BAD_CHAR.search(data[key]):
            raise RecordError(json_problem(data[key], where=key) or key)
    data.setdefault("scraped_at", datetime.now(UTC))
    try:
        return Record.model_validate(data)
    except RecordError:
        raise
    except ValidationError as exc:
        raise RecordError(first_error(exc, "record")) from None
