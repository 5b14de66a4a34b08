"""Codec registry: look codecs up by id, list them, decode any stateless frame without knowing
its codec. Stateless codecs (`Codec`) and stream codecs (`StreamCodec`) share one id space."""

from __future__ import annotations

from typing import Any

from swarmpress.codecs.core import frame as _frame
from swarmpress.codecs.core.base import BaseCodec
from swarmpress.codecs.core.errors import CodecError

_REGISTRY: dict[str, type[BaseCodec]] = {}


def register(cls: type[BaseCodec]) -> type[BaseCodec]:
    """Class decorator: make a codec available to get_codec() and decode()."""
    cid = cls.codec_id
    if cid in _REGISTRY and _REGISTRY[cid] is not cls:
        raise CodecError(f"codec id {cid!r} is already registered by {_REGISTRY[cid].__name__}")
    _REGISTRY[cid] = cls
    return cls


# Names that mean another codec wherever a codec is named: library, CLI, bench, swarm.
CODEC_ALIASES = {"none": "raw"}  # the uncompressed baseline: the raw tensor, framed and checked


def codec_class(name: str) -> type[BaseCodec]:
    """The registered class for a codec id or alias; CodecError listing the known ids."""
    try:
        return _REGISTRY[CODEC_ALIASES.get(name, name)]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise CodecError(f"unknown codec {name!r}; available: {known}") from None


def get_codec(name: str, **params: Any) -> BaseCodec:
    """Build a codec by id or spec with parameters: get_codec("blockq", bits=4) and
    get_codec("blockq:bits=4") are the same codec (the CLI's spec grammar, specs.py)."""
    if not isinstance(name, str):
        raise CodecError(f"a codec name or spec must be a string, got {type(name).__name__}")
    if ":" in name:
        from swarmpress.codecs.core.specs import parse_codec_spec

        name, parsed = parse_codec_spec(name)
        both = sorted(set(parsed) & set(params))
        if both:
            raise CodecError(f"codec {name!r}: {', '.join(both)} set in the spec and as arguments")
        params = {**parsed, **params}
    return codec_class(name)(**params)


def list_codecs() -> list[dict[str, Any]]:
    """Descriptions of every registered codec, sorted by id."""
    return [_REGISTRY[k].describe() for k in sorted(_REGISTRY)]


def decode(blob: bytes | bytearray | memoryview, device: Any = None) -> Any:
    """Decode any stateless frame: the frame names its codec and parameters. A stream
    codec's frame is refused: only a decoder that followed its stream can decode it."""
    fr = _frame.unpack(blob)
    cls = codec_class(fr.codec_id)
    if fr.stream and not cls.stream:
        raise CodecError(
            f"frame flags say stream codec, but {fr.codec_id!r} is stateless: the flags are forged"
        )
    if cls.stream:
        raise CodecError(
            f"frame from stream codec {fr.codec_id!r}: it decodes only in order, with the "
            f"stream's decoder (get_codec({fr.codec_id!r}, ...).decoder().decode(frame))"
        )
    return cls.from_frame_params(fr.params).decode_frame(fr, device)
