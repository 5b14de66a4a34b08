"""The self-describing, checksummed frame that wraps every encoded tensor.

Layout (little-endian; documented in docs/frame-format.md):

    magic "SWPF" | version u8 | flags u8 | dtype u8 | container u8 | ndim u8 |
    id_len u8 | codec id | params_len u16 | params JSON | shape u64 x ndim |
    payload_len u64 | payload | crc32 u32 (of every byte before it)

The parser never trusts a field: every length is checked against the bytes that remain
and every failure raises CodecError with a message naming the field.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.tensors import Container, DType

MAGIC = b"SWPF"
VERSION = 1
FLAG_STREAM = 0x01  # a stream codec's frame: it decodes only in order, by its stream's decoder
KNOWN_FLAGS = FLAG_STREAM
MAX_NDIM = 32
MAX_ELEMENTS = 1 << 40
MAX_PARAM_DEPTH = 8  # nesting of arrays/objects in the params JSON
MAX_PARAM_DIGITS = 20  # digits of an integer in the params JSON (any 64-bit value fits)
_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")
_FIXED = struct.Struct("<4sBBBBBB")  # magic, version, flags, dtype, container, ndim, id_len
MIN_FRAME = _FIXED.size + 2 + 8 + 4


@dataclass(frozen=True)
class Frame:
    """A parsed frame: the codec that made it, its parameters, the tensor's facts, the payload."""

    codec_id: str
    params: dict[str, Any]
    dtype: DType
    container: Container
    shape: tuple[int, ...]
    payload: bytes | memoryview
    flags: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def stream(self) -> bool:
        """Made by a stream codec: only that stream's decoder, fed in order, decodes it."""
        return bool(self.flags & FLAG_STREAM)


def pack(
    codec_id: str,
    params: dict[str, Any],
    dtype: DType,
    container: Container,
    shape: tuple[int, ...],
    payload: bytes,
    flags: int = 0,
) -> bytes:
    """Serialize one frame; the checksum covers header and payload."""
    if not _ID_RE.match(codec_id):
        raise CodecError(f"invalid codec id {codec_id!r}")
    if len(shape) > MAX_NDIM:
        raise CodecError(f"tensor has {len(shape)} dimensions; frames hold at most {MAX_NDIM}")
    pjson = json.dumps(params, sort_keys=True, separators=(",", ":")).encode()
    if len(pjson) > 0xFFFF:
        raise CodecError("codec parameters exceed 65535 bytes of JSON")
    cid = codec_id.encode("ascii")
    parts = [
        _FIXED.pack(MAGIC, VERSION, flags, int(dtype), int(container), len(shape), len(cid)),
        cid,
        struct.pack("<H", len(pjson)),
        pjson,
        struct.pack(f"<{len(shape)}Q", *shape),
        struct.pack("<Q", len(payload)),
        payload,
    ]
    crc = 0
    for part in parts:  # the checksum runs over the parts: one join, no body-sized copies
        crc = zlib.crc32(part, crc)
    parts.append(struct.pack("<I", crc))
    return b"".join(parts)


def unpack(blob: bytes | bytearray | memoryview) -> Frame:
    """Parse and verify a frame; raise CodecError naming the first thing that is wrong."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(blob).__name__}")
    mv = memoryview(blob)
    if not mv.contiguous:
        mv = memoryview(mv.tobytes())
    mv = mv.cast("B")
    n = len(mv)
    if n == 0:
        raise CodecError("empty input: not a swarmpress frame")
    if n < 4 or bytes(mv[:4]) != MAGIC:
        if n < 4 and MAGIC.startswith(bytes(mv)):
            raise CodecError(f"truncated frame: {n} bytes, shorter than the header")
        raise CodecError(
            f"not a swarmpress frame: bad magic {bytes(mv[:4])!r} (expected {MAGIC!r})"
        )
    if n < MIN_FRAME:
        raise CodecError(f"truncated frame: {n} bytes, shorter than the {MIN_FRAME}-byte minimum")
    _, version, flags, dtype, container, ndim, id_len = _FIXED.unpack_from(mv, 0)
    if version != VERSION:
        raise CodecError(f"unsupported frame format version {version} (this build reads {VERSION})")
    pos = _FIXED.size
    pos, cid = _take(mv, pos, id_len, "codec id")
    pos, (plen,) = _struct(mv, pos, "<H", "params length")
    pos, pjson = _take(mv, pos, plen, "codec params")
    pos, shape = _struct(mv, pos, f"<{ndim}Q", "shape")
    pos, (payload_len,) = _struct(mv, pos, "<Q", "payload length")
    remaining = n - pos - 4
    if payload_len > remaining:
        raise CodecError(
            f"truncated frame: header declares a {payload_len}-byte payload "
            f"but only {max(remaining, 0)} bytes follow"
        )
    if payload_len < remaining:
        raise CodecError(
            f"frame has {remaining - payload_len} trailing bytes after the declared payload"
        )
    (crc,) = struct.unpack_from("<I", mv, n - 4)
    if zlib.crc32(mv[: n - 4]) != crc:
        raise CodecError("checksum mismatch: the frame is corrupted")
    # Checksum is good from here on; the remaining checks catch frames made by a buggy or
    # hostile encoder rather than line noise.
    if flags & ~KNOWN_FLAGS:
        raise CodecError(f"unknown frame flags 0x{flags:02x}")
    try:
        dtype_code = DType(dtype)
    except ValueError:
        raise CodecError(f"unknown dtype code {dtype} in frame header") from None
    try:
        container_code = Container(container)
    except ValueError:
        raise CodecError(f"unknown container code {container} in frame header") from None
    if ndim > MAX_NDIM:
        raise CodecError(f"frame declares {ndim} dimensions; at most {MAX_NDIM} are allowed")
    try:
        codec_id = bytes(cid).decode("ascii")
    except UnicodeDecodeError:
        raise CodecError("codec id in frame header is not ASCII") from None
    if not _ID_RE.match(codec_id):
        raise CodecError(f"invalid codec id {codec_id!r} in frame header")
    params = parse_params(bytes(pjson))
    check_shape(shape)
    return Frame(
        codec_id=codec_id,
        params=params,
        dtype=dtype_code,
        container=container_code,
        shape=tuple(shape),
        payload=mv[pos : pos + payload_len],
        flags=flags,
    )


def parse_params(raw: bytes) -> dict[str, Any]:
    """The params JSON object of a frame; CodecError for anything hostile or malformed.

    Nesting deeper than MAX_PARAM_DEPTH, integers longer than MAX_PARAM_DIGITS digits and
    non-finite numbers (NaN, Infinity, 1e999) are refused before they can reach Python's
    recursion limit, its integer-conversion limit or a codec's parameter checks.
    """
    if _json_depth(raw) > MAX_PARAM_DEPTH:
        raise CodecError(f"codec params in frame header nest deeper than {MAX_PARAM_DEPTH} levels")
    try:
        params = json.loads(
            raw.decode("utf-8"),
            parse_int=_json_int,
            parse_float=_json_float,
            parse_constant=_json_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise CodecError("codec params in frame header are not valid JSON") from None
    if not isinstance(params, dict):
        raise CodecError("codec params in frame header are not a JSON object")
    return params


def check_shape(shape: tuple[int, ...] | list[int]) -> None:
    """CodecError unless the shape's elements, zero-size dimensions aside, stay within limits.

    A zero dimension makes the tensor empty, but numpy (and torch) still refuse a shape
    whose other dimensions multiply past the address space, so those count too.
    """
    nonzero = 1
    for d in shape:
        if d > MAX_ELEMENTS:
            raise CodecError(f"frame declares a dimension above the {MAX_ELEMENTS} limit")
        if d:
            nonzero *= d
            if nonzero > MAX_ELEMENTS:
                raise CodecError(
                    f"frame declares a shape of more than {MAX_ELEMENTS} elements "
                    "(zero-size dimensions aside)"
                )


def _json_depth(raw: bytes) -> int:
    """Deepest nesting of arrays and objects in raw JSON (strings skipped), capped early."""
    depth = deepest = 0
    for m in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', raw)):
        depth += 1 if m.group() in (b"[", b"{") else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_PARAM_DEPTH:
                break
    return deepest


def _json_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_PARAM_DIGITS:
        raise CodecError(f"codec params in frame header hold an integer of {len(text)} digits")
    return int(text)


def _json_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise CodecError("codec params in frame header hold a non-finite number")
    return value


def _json_constant(text: str) -> float:
    raise CodecError(f"codec params in frame header hold {text}, which JSON does not allow")


def _take(mv: memoryview, pos: int, size: int, what: str) -> tuple[int, memoryview]:
    if pos + size > len(mv) - 4:
        raise CodecError(f"truncated frame: {what} runs past the end of the input")
    return pos + size, mv[pos : pos + size]


def _struct(mv: memoryview, pos: int, fmt: str, what: str) -> tuple[int, tuple]:
    size = struct.calcsize(fmt)
    if pos + size > len(mv) - 4:
        raise CodecError(f"truncated frame: {what} runs past the end of the input")
    return pos + size, struct.unpack_from(fmt, mv, pos)
