"""Codec specs on the command line: "blockq:bits=4" -> get_codec("blockq", bits=4).

A spec is a registered codec id, optionally followed by `:name=value` parameters, joined
by more colons (`blockq:bits=4:block=32`). In a comma-separated list a bare `name=value`
item continues the spec before it, so `zstd,blockq:bits=4,block=32` also works. Values are
coerced to the parameter's declared type (int, float, bool, str), so errors come from the
codec's own validation and name the codec, the parameter and the rule.
"""

from __future__ import annotations

from typing import Any

from swarmpress.codecs.core.base import BaseCodec
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.registry import codec_class, get_codec

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def split_codec_list(text: str) -> list[str]:
    """Split "zstd,blockq:bits=4,block=32" into specs; a bare k=v item extends the previous."""
    specs: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        if "=" in item and ":" not in item and specs:
            specs[-1] += ":" + item
        elif "=" in item and ":" not in item:
            raise CodecError(f"codec spec {item!r} names a parameter but no codec")
        else:
            specs.append(item)
    if not specs:
        raise CodecError("the codec list is empty")
    return specs


def _coerce(codec_id: str, name: str, value: str, kind: type | None) -> Any:
    if kind is bool:
        low = value.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise CodecError(f"{codec_id}: parameter {name} must be true or false, got {value!r}")
    if kind is int:
        if not value.isascii():
            raise CodecError(f"{codec_id}: parameter {name} must be an integer, got {value!r}")
        try:
            return int(value, 0)
        except ValueError:
            raise CodecError(
                f"{codec_id}: parameter {name} must be an integer, got {value!r}"
            ) from None
    if kind is float:
        if not value.isascii():
            raise CodecError(f"{codec_id}: parameter {name} must be a number, got {value!r}")
        try:
            return float(value)
        except ValueError:
            raise CodecError(
                f"{codec_id}: parameter {name} must be a number, got {value!r}"
            ) from None
    return value


def parse_codec_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """("blockq", {"bits": 4}) for "blockq:bits=4"; CodecError for a malformed spec."""
    parts = [p.strip() for p in spec.strip().split(":")]
    codec_id = parts[0]
    if not codec_id:
        raise CodecError(f"codec spec {spec!r} has no codec name")
    cls = codec_class(codec_id)  # CodecError listing the known codecs
    types = {p.name: p.type for p in cls.params}
    params: dict[str, Any] = {}
    for part in parts[1:]:
        name, sep, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name or not value:
            raise CodecError(f"codec spec {spec!r}: expected name=value, got {part!r}")
        if name in params:
            raise CodecError(f"codec spec {spec!r} sets {name} twice")
        params[name] = _coerce(codec_id, name, value, types.get(name))
    return codec_id, params


def build_codec(spec: str) -> BaseCodec:
    """The codec a spec describes (CodecError for unknown codecs and bad parameters)."""
    codec_id, params = parse_codec_spec(spec)
    return get_codec(codec_id, **params)
