"""Entropy coding of a 2-D integer field (rows x channels) with a scale-conditioned model.

The field's per-channel and per-row log-scales (quarter octaves) are estimated by the
encoder and sent; each symbol's model is the scalemodel bucket at channel + row scale. The
side information of a field is written before the range-coded words, which are shared by
every field of a payload (one coder, fields appended in order).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import zstandard

from swarmpress.codecs import scalemodel
from swarmpress.codecs.errors import CodecError
from swarmpress.codecs.planes import pack_bits, unpack_bits
from swarmpress.codecs.zstdio import decompress_exact

K_RANGE = (-64, 191)
_HEAD = struct.Struct("<BBhhI")  # family, flags, k_min, k_max, escape count
_ROW_SCALES = 0x01


def pack_blob(data: bytes) -> bytes:
    """A length-prefixed zstd frame."""
    body = zstandard.ZstdCompressor(level=3).compress(data)
    return struct.pack("<I", len(body)) + body


def unpack_blob(mv: memoryview, pos: int, size: int, what: str) -> tuple[bytes, int]:
    """Read a pack_blob section that must decompress to exactly size bytes."""
    if len(mv) - pos < 4:
        raise CodecError(f"lossy payload truncated: {what} missing")
    (n,) = struct.unpack_from("<I", mv, pos)
    pos += 4
    if n > len(mv) - pos:
        raise CodecError(f"lossy payload truncated: {what} runs past the end")
    return decompress_exact(mv[pos : pos + n], size, f"lossy {what}"), pos + n


def _log4(v: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        codes = np.rint(scalemodel.STEPS_PER_OCTAVE * np.log2(v))
    return np.clip(np.nan_to_num(codes, neginf=K_RANGE[0]), *K_RANGE).astype(np.int64)


def scale_codes(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Per-channel and per-row log-scale codes of the field; rows only when they differ."""
    sq = r.astype(np.float64) ** 2
    chan_rms = np.sqrt(sq.mean(axis=0))
    rows = np.zeros(r.shape[0], dtype=np.int64)
    if r.shape[0] < 2 or r.shape[1] < 8:
        return _log4(chan_rms), rows, False
    norm = np.where(chan_rms > 0, chan_rms, 1.0)
    row_rms = np.sqrt((sq / (norm * norm)[None, :]).mean(axis=1))
    rows = _log4(np.where(row_rms > 0, row_rms, 2.0 ** (K_RANGE[0] / 4)))
    rows -= int(np.median(rows))
    if np.abs(rows).mean() < 0.5:  # rows are alike: row scales would cost without paying
        return _log4(chan_rms), np.zeros_like(rows), False
    row_f = np.exp2(rows / scalemodel.STEPS_PER_OCTAVE)
    chan_rms = np.sqrt((sq / (row_f * row_f)[:, None]).mean(axis=0))
    return _log4(chan_rms), rows, True


def _buckets(chan: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.clip(chan[None, :] + rows[:, None], *K_RANGE).reshape(-1)


def _pick_family(r: np.ndarray, k: np.ndarray) -> str:
    stride = max(1, r.size // 65536)
    rs, ks = r[::stride], k[::stride]
    costs = {f: scalemodel.ideal_bits(rs, ks, f) for f in scalemodel.FAMILIES}
    return min(costs, key=costs.get)


def estimate_bits(r: np.ndarray) -> float:
    """Ideal code length of the field (symbols only, best family, on a sample)."""
    r = r.astype(np.int64)
    chan, rows, _ = scale_codes(r)
    k = _buckets(chan, rows)
    flat = r.reshape(-1)
    stride = max(1, flat.size // 65536)
    best = min(scalemodel.ideal_bits(flat[::stride], k[::stride], f) for f in scalemodel.FAMILIES)
    return best * stride


def encode_field(coder, r: np.ndarray) -> bytes:
    """Append the field's symbols to coder; return its side information."""
    chan, rows, use_rows = scale_codes(r)
    k = _buckets(chan, rows)
    flat = r.reshape(-1)
    family = _pick_family(flat, k)
    lowbits, escapes = scalemodel.encode(coder, flat, k, family)
    head = _HEAD.pack(
        scalemodel.FAMILIES.index(family),
        _ROW_SCALES if use_rows else 0,
        int(k.min()),
        int(k.max()),
        escapes.size,
    )
    return b"".join(
        [
            head,
            pack_blob(chan.astype("<i2").tobytes()),
            pack_blob(rows.astype("<i2").tobytes()) if use_rows else b"",
            pack_blob(escapes.astype("<i8").tobytes()),
            pack_blob(_pack_low(lowbits, k)),
        ]
    )


@dataclass(frozen=True)
class FieldSide:
    """What the decoder read about one field before the range-coded words."""

    shape: tuple[int, int]
    family: str
    buckets: np.ndarray
    lowbits: np.ndarray
    escapes: np.ndarray


def read_field(mv: memoryview, pos: int, nrows: int, nchan: int) -> tuple[FieldSide, int]:
    """Parse a field's side information; every count is checked against the shape."""
    if len(mv) - pos < _HEAD.size:
        raise CodecError("lossy payload truncated: field header missing")
    fam, flags, k_min, k_max, nesc = _HEAD.unpack_from(mv, pos)
    pos += _HEAD.size
    if fam >= len(scalemodel.FAMILIES) or flags & ~_ROW_SCALES:
        raise CodecError("lossy field header has an unknown model or flags")
    if not K_RANGE[0] <= k_min <= k_max <= K_RANGE[1]:
        raise CodecError("lossy field declares scale codes out of range")
    if nesc > nrows * nchan:
        raise CodecError("lossy field declares more escapes than values")
    raw, pos = unpack_blob(mv, pos, 2 * nchan, "channel scales")
    chan = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    rows = np.zeros(nrows, dtype=np.int64)
    if flags & _ROW_SCALES:
        raw, pos = unpack_blob(mv, pos, 2 * nrows, "row scales")
        rows = np.frombuffer(raw, dtype="<i2").astype(np.int64)
    k = _buckets(chan, rows)
    if k.size and (k.min() != k_min or k.max() != k_max):
        raise CodecError("lossy scale codes disagree with the field header")
    raw, pos = unpack_blob(mv, pos, 8 * nesc, "escapes")
    escapes = np.frombuffer(raw, dtype="<i8").astype(np.int64)
    widths = _low_widths(k)
    raw, pos = unpack_blob(mv, pos, sum((w * n + 7) // 8 for w, n in widths if w), "low bits")
    side = FieldSide((nrows, nchan), scalemodel.FAMILIES[fam], k, _unpack_low(raw, widths), escapes)
    return side, pos


def decode_field(decoder, side: FieldSide) -> np.ndarray:
    """The field's integers (rows x channels), read from the shared decoder."""
    r = scalemodel.decode(decoder, side.buckets, side.family, side.lowbits, side.escapes)
    return r.reshape(side.shape)


def _low_widths(k: np.ndarray) -> list[tuple[int, int]]:
    kk, counts = np.unique(k, return_counts=True)
    return [(scalemodel.raw_bits(int(b)), int(n)) for b, n in zip(kk, counts, strict=True)]


def _pack_low(lowbits: np.ndarray, k: np.ndarray) -> bytes:
    out, pos = [], 0
    for w, n in _low_widths(k):
        if w:
            out.append(pack_bits(lowbits[pos : pos + n], w))
            pos += n
    return b"".join(out)


def _unpack_low(raw: bytes, widths: list[tuple[int, int]]) -> np.ndarray:
    parts, pos = [], 0
    for w, n in widths:
        if w:
            size = (w * n + 7) // 8
            parts.append(unpack_bits(raw[pos : pos + size], n, w))
            pos += size
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
