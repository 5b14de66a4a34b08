"""Safetensors checkpoints compressed tensor by tensor, bit-exact (docs/checkpoint.md).

`compress_checkpoint` turns a .safetensors file into a SWCK container: the original header
JSON kept verbatim, then one checked frame per tensor in data-offset order (bf16/fp16/fp32
through a lossless swarmpress codec, every other dtype through Zstandard) and an index of
them, so `decompress_checkpoint` gives the input back byte for byte while streaming, and
`load_tensor` decodes one tensor without reading the others. Memory is bounded by the
largest tensor (times `threads`), never by the file; every size a file declares is checked
against the bytes it holds before anything is allocated.
"""

from __future__ import annotations

import json
import math
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import ml_dtypes
import numpy as np
import zstandard

from swarmpress.codecs import Codec, CodecError, codec_class, get_codec, unpack_frame
from swarmpress.codecs.entropy.zstdio import decompress_exact
from swarmpress.errors import SwarmpressError

__all__ = [
    "DEFAULT_CODEC",
    "CheckpointError",
    "CheckpointMismatch",
    "CheckpointReader",
    "Report",
    "TensorEntry",
    "compress_checkpoint",
    "decompress_checkpoint",
    "load_tensor",
    "parse_safetensors_header",
    "verify_checkpoint",
]

#: The codec for bf16/fp16/fp32 tensors, chosen by benchmarks/checkpoint_bench.py
#: (docs/results/checkpoint/checkpoint.md): on MiniLM and SmolLM2 bf16 the byte-plane mode
#: is 1-2 % larger than mode=max (0.665 against 0.652-0.658), on fp32 smaller, and 3-8
#: times faster both ways (~1.2 GB/s compress, ~2 GB/s decompress on one core).
DEFAULT_CODEC = "lossless:mode=fast"

MAGIC = b"SWCK"
VERSION = 1
# magic, version, flags, reserved, header_len, count, data_len
PREAMBLE = struct.Struct("<4sBBHQQQ")
# begin, raw_len, frame_offset, frame_len, frame_crc, raw_crc, kind, 7 reserved bytes
ENTRY = struct.Struct("<QQQQIIB7x")
CRC = struct.Struct("<I")
KIND_EMPTY, KIND_CODEC, KIND_ZSTD = 0, 1, 2
KIND_NAMES = {KIND_EMPTY: "empty", KIND_CODEC: "codec", KIND_ZSTD: "zstd"}
ZSTD_LEVEL = 3  # the frames of non-float tensors (integers, bool, fp64, fp8 ...)

#: safetensors refuses headers above 100 MB; so does this reader (before reading them).
MAX_HEADER = 100_000_000
MAX_NDIM = 1024  # more dimensions than any framework holds: a lying header
MAX_DIM = 1 << 63
#: Tensor dtypes coded by `codec`, as numpy dtypes.
FLOAT_DTYPES: dict[str, np.dtype] = {
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "F16": np.dtype(np.float16),
    "F32": np.dtype(np.float32),
}
#: Bits per element of every dtype safetensors knows; others are kept as opaque bytes.
DTYPE_BITS: dict[str, int] = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E4M3FNUZ": 8,
    "F8_E5M2FNUZ": 8, "F8_E8M0": 8, "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}  # fmt: skip
#: numpy dtypes of what `load_tensor` returns (other dtypes come back as raw uint8 bytes).
NUMPY_DTYPES: dict[str, np.dtype] = {
    **FLOAT_DTYPES,
    "BOOL": np.dtype(np.bool_), "U8": np.dtype(np.uint8), "I8": np.dtype(np.int8),
    "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16), "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32), "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64),
    "F64": np.dtype(np.float64), "C64": np.dtype(np.complex64),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
}  # fmt: skip

Progress = Callable[[str, int, int], None]  # (tensor name, tensors done, tensors in all)
T = TypeVar("T")
R = TypeVar("R")


class CheckpointError(SwarmpressError, ValueError):
    """A checkpoint that cannot be read or written as asked: not a safetensors file, a
    truncated or corrupted file, a header that lies, an output that exists (exit 2)."""

    exit_code = 2


class CheckpointMismatch(CheckpointError):
    """A frame decoded, but not to the bytes compressed into it (its CRC): the check failed."""

    exit_code = 1


# ----------------------------------------------------------------------------- header
@dataclass(frozen=True)
class TensorEntry:
    """One tensor of a safetensors header: name, dtype, shape and its bytes in the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise CheckpointError(f"the header names {key!r} twice")
        out[key] = value
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _entry(name: str, spec: Any, data_len: int) -> TensorEntry:
    """One header entry, checked: types, shape against byte count, offsets inside the data."""
    if not isinstance(spec, dict):
        raise CheckpointError(f"tensor {name!r}: its header entry is not a JSON object")
    dtype, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    if not isinstance(dtype, str) or not dtype:
        raise CheckpointError(f"tensor {name!r}: dtype is missing or not a string")
    if not isinstance(shape, list) or len(shape) > MAX_NDIM:
        raise CheckpointError(f"tensor {name!r}: shape must be a list of at most {MAX_NDIM} sizes")
    if not all(_is_int(d) and 0 <= d < MAX_DIM for d in shape):
        raise CheckpointError(f"tensor {name!r}: shape {shape} holds a size that is not 0..2^63")
    if not (isinstance(offsets, list) and len(offsets) == 2 and all(map(_is_int, offsets))):
        raise CheckpointError(f"tensor {name!r}: data_offsets must be two integers")
    begin, end = offsets
    if not 0 <= begin <= end:
        raise CheckpointError(f"tensor {name!r}: data_offsets [{begin}, {end}] are not ordered")
    if end > data_len:
        raise CheckpointError(
            f"tensor {name!r}: data_offsets [{begin}, {end}] run past the end of the data "
            f"section ({data_len} bytes): the file is truncated or its header lies"
        )
    bits = DTYPE_BITS.get(dtype)
    if bits is not None:
        numel = 0 if 0 in shape else math.prod(shape)
        if numel * bits != 8 * (end - begin):
            raise CheckpointError(
                f"tensor {name!r}: dtype {dtype} and shape {shape} need {numel * bits / 8:g} "
                f"bytes but data_offsets [{begin}, {end}] give {end - begin}"
            )
    return TensorEntry(name, dtype, tuple(shape), begin, end)


def parse_safetensors_header(
    raw: bytes, data_len: int
) -> tuple[dict[str, str] | None, list[TensorEntry]]:
    """(__metadata__, tensors in data-offset order) of a safetensors header JSON, checked
    against a data section of data_len bytes: every byte of it in exactly one tensor."""
    if not raw[:1] == b"{":
        raise CheckpointError("not a safetensors file: its header is not a JSON object")
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise CheckpointError("not a safetensors file: its header is not UTF-8") from None
    except RecursionError:
        raise CheckpointError("the header JSON is nested too deeply") from None
    except CheckpointError:
        raise
    except ValueError as exc:
        raise CheckpointError(f"not a safetensors file: its header is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise CheckpointError("not a safetensors file: its header is not a JSON object")
    metadata = doc.pop("__metadata__", None)
    if metadata is not None and not (
        isinstance(metadata, dict) and all(isinstance(v, str) for v in metadata.values())
    ):
        raise CheckpointError("the header's __metadata__ is not an object of strings")
    entries = sorted(
        (_entry(name, spec, data_len) for name, spec in doc.items()),
        key=lambda e: (e.begin, e.end, e.name),
    )
    pos, last = 0, None
    for e in entries:
        if e.begin < pos:
            raise CheckpointError(
                f"tensor {e.name!r} (bytes {e.begin}..{e.end}) overlaps tensor {last!r} "
                f"(which ends at {pos}): the header lies"
            )
        if e.begin > pos:
            raise CheckpointError(
                f"bytes {pos}..{e.begin} of the data section belong to no tensor "
                "(safetensors allows no holes)"
            )
        pos, last = e.end, e.name
    if pos != data_len:
        raise CheckpointError(
            f"the data section has {data_len} bytes but its tensors cover {pos}: "
            f"{data_len - pos} trailing bytes belong to no tensor"
        )
    return metadata, entries


def _read_exact(f: BinaryIO, n: int, what: str) -> bytearray:
    """n bytes from f (the caller checked the file holds them); CheckpointError if it did not."""
    buf = bytearray(n)
    got = f.readinto(buf) if n else 0
    if got != n:
        raise CheckpointError(f"{what}: the file ended after {got} of {n} bytes (truncated)")
    return buf


def _read_safetensors(f: BinaryIO, size: int, where: str) -> tuple[bytes, list[TensorEntry]]:
    """(header JSON bytes, tensors) of the safetensors file open in f, size bytes long."""
    if size < 8:
        raise CheckpointError(f"{where}: not a safetensors file ({size} bytes, too short)")
    (n,) = struct.unpack("<Q", _read_exact(f, 8, where))
    if f.read(1) not in (b"{", b""):
        raise CheckpointError(
            f"{where}: not a safetensors file (no JSON object after its first 8 bytes)"
        )
    f.seek(8)
    if n > MAX_HEADER:
        raise CheckpointError(
            f"{where}: not a safetensors file (its header length {n} is above safetensors' "
            f"limit of {MAX_HEADER})"
        )
    if n > size - 8:
        raise CheckpointError(
            f"{where}: truncated: the header declares {n} bytes, the file holds {size - 8}"
        )
    header = bytes(_read_exact(f, n, where))
    try:
        _, entries = parse_safetensors_header(header, size - 8 - n)
    except CheckpointError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    return header, entries


# ----------------------------------------------------------------------------- report
@dataclass
class Report:
    """What one compress, decompress or verify did: sizes, time and speed, per dtype too."""

    operation: str
    src: str
    dst: str | None
    codec: str
    tensors: int
    original_bytes: int  # the safetensors file
    compressed_bytes: int  # the SWCK file
    seconds: float
    threads: int = 1
    by_dtype: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """Compressed bytes / original bytes (lower is better)."""
        return self.compressed_bytes / self.original_bytes if self.original_bytes else 1.0

    @property
    def mb_per_s(self) -> float:
        """Original megabytes (10^6 bytes) per second of wall time."""
        return self.original_bytes / 1e6 / self.seconds if self.seconds > 0 else float("inf")

    def add(self, dtype: str, raw: int, compressed: int) -> None:
        row = self.by_dtype.setdefault(dtype, {"tensors": 0, "bytes": 0, "compressed": 0})
        row["tensors"] += 1
        row["bytes"] += raw
        row["compressed"] += compressed

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: every field plus ratio and MB/s."""
        return {
            "operation": self.operation, "src": self.src, "dst": self.dst, "codec": self.codec,
            "tensors": self.tensors, "original_bytes": self.original_bytes,
            "compressed_bytes": self.compressed_bytes, "ratio": round(self.ratio, 6),
            "seconds": round(self.seconds, 4), "mb_per_s": round(self.mb_per_s, 2),
            "threads": self.threads,
            "by_dtype": {
                k: {**v, "ratio": round(v["compressed"] / v["bytes"], 6) if v["bytes"] else 1.0}
                for k, v in sorted(self.by_dtype.items())
            },
        }  # fmt: skip


# ----------------------------------------------------------------------------- plumbing
def _ordered(items: Iterable[T], fn: Callable[[T], R], threads: int) -> Iterator[R]:
    """fn over items, results in order; at most `threads` items in flight (bounded memory)."""
    if threads <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="swarmpress-ckpt") as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= threads:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _check_threads(threads: int) -> int:
    if not _is_int(threads) or threads < 1:
        raise CheckpointError(f"threads must be a positive integer, got {threads!r}")
    return threads


class _Output:
    """dst written through a temporary file beside it, renamed into place only on success."""

    def __init__(self, dst: str | os.PathLike, src: Path, force: bool) -> None:
        self.path = Path(dst)
        if self.path.is_dir():
            raise CheckpointError(f"{self.path} is a directory; name the output file")
        if self.path.exists() and not self.path.is_file():  # a device, FIFO or socket
            raise CheckpointError(f"{self.path} is not a regular file; name an output file")
        if not self.path.parent.is_dir():
            raise CheckpointError(f"{self.path.parent}: no such directory for the output")
        if self.path.exists():
            if os.path.samefile(self.path, src):
                raise CheckpointError(f"{self.path} is the input file; name another output")
            if not force:
                raise CheckpointError(
                    f"{self.path} exists; pass --force (force=True) to replace it"
                )
        self.tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        self.file: BinaryIO = open(self.tmp, "wb")  # noqa: SIM115 - closed in __exit__

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _open_input(src: str | os.PathLike) -> tuple[Path, BinaryIO, int]:
    path = Path(src)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file")
    if not path.is_file():
        raise CheckpointError(f"{path}: not a regular file")
    f = open(path, "rb")  # noqa: SIM115 - the callers close it
    return path, f, os.fstat(f.fileno()).st_size


def _codec(codec: str | Codec) -> tuple[Codec, str]:
    """The codec for float tensors (a spec or an instance): stateless and lossless."""
    c = get_codec(codec) if isinstance(codec, str) else codec
    if not isinstance(c, Codec):
        raise CheckpointError(
            f"codec {c.codec_id!r} is a stream codec; a checkpoint needs frames that decode alone"
        )
    if not c.lossless:
        raise CheckpointError(
            f"codec {c.codec_id!r} is lossy; a checkpoint must come back bit-exact "
            "(use lossless, zstd or raw)"
        )
    spec = ":".join([c.codec_id, *(f"{k}={v}" for k, v in sorted(c.config.items()))])
    return c, spec


def _encode(item: tuple[TensorEntry, bytearray], codec: Codec) -> tuple[int, bytes, int]:
    """(kind, frame, crc32 of the raw bytes) of one tensor."""
    e, buf = item
    raw_crc = zlib.crc32(buf)
    if not buf:
        return KIND_EMPTY, b"", raw_crc
    np_dtype = FLOAT_DTYPES.get(e.dtype)
    if np_dtype is None:
        zc = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        return KIND_ZSTD, zc.compress(buf), raw_crc
    shape = e.shape if len(e.shape) <= 32 else (-1, e.shape[-1])  # frames hold 32 dimensions
    arr = np.frombuffer(buf, dtype=np_dtype).reshape(shape)
    return KIND_CODEC, codec.encode(arr), raw_crc


# ----------------------------------------------------------------------------- compress
def compress_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    codec: str | Codec = DEFAULT_CODEC,
    threads: int = 1,
    progress: Progress | None = None,
    *,
    force: bool = False,
) -> Report:
    """Compress a .safetensors file into a SWCK file, tensor by tensor (docs/checkpoint.md):
    bf16/fp16/fp32 through `codec` (lossless), other dtypes through Zstandard."""
    threads = _check_threads(threads)
    coder, spec = _codec(codec)
    start = time.perf_counter()
    path, f, size = _open_input(src)
    with f:
        header, entries = _read_safetensors(f, size, str(path))
        data_len = size - 8 - len(header)
        report = Report("compress", str(path), str(dst), spec, len(entries), size, 0, 0.0, threads)
        frames_at = PREAMBLE.size + len(header) + ENTRY.size * len(entries) + CRC.size
        preamble = PREAMBLE.pack(MAGIC, VERSION, 0, 0, len(header), len(entries), data_len)

        def tensors() -> Iterator[tuple[TensorEntry, bytearray]]:
            for e in entries:  # sequential reads: the data section is in offset order
                yield e, _read_exact(f, e.nbytes, f"{path}: tensor {e.name!r}")

        with _Output(dst, path, force) as out:
            out.file.write(preamble)
            out.file.write(header)
            out.file.write(bytes(frames_at - PREAMBLE.size - len(header)))  # index, CRC later
            index, pos = [], frames_at
            coded = _ordered(tensors(), lambda item: _encode(item, coder), threads)
            for i, (e, (kind, frame, raw_crc)) in enumerate(zip(entries, coded, strict=True)):
                out.file.write(frame)
                index.append(
                    ENTRY.pack(e.begin, e.nbytes, pos, len(frame), zlib.crc32(frame), raw_crc, kind)
                )
                pos += len(frame)
                report.add(e.dtype, e.nbytes, len(frame))
                if progress is not None:
                    progress(e.name, i + 1, len(entries))
            table = b"".join(index)
            out.file.seek(PREAMBLE.size + len(header))
            out.file.write(table)
            out.file.write(CRC.pack(zlib.crc32(table, zlib.crc32(header, zlib.crc32(preamble)))))
    report.compressed_bytes = pos
    report.seconds = time.perf_counter() - start
    return report


# ----------------------------------------------------------------------------- reader
@dataclass(frozen=True)
class FrameEntry:
    """One index entry of a SWCK file, with the header's facts about its tensor."""

    tensor: TensorEntry
    kind: int
    offset: int
    length: int
    frame_crc: int
    raw_crc: int


class CheckpointReader:
    """An open SWCK file, every structural field checked against the bytes it holds:
    the original header, the index, each tensor's frame on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path, self._f, self.size = _open_input(path)
        try:
            self._read_head()
        except BaseException:
            self._f.close()
            raise

    def _fail(self, message: str) -> CheckpointError:
        return CheckpointError(f"{self.path}: {message}")

    def _read_head(self) -> None:
        size, f = self.size, self._f
        if size < PREAMBLE.size + CRC.size:
            raise self._fail(f"not a swarmpress checkpoint ({size} bytes, too short)")
        pre = bytes(_read_exact(f, PREAMBLE.size, str(self.path)))
        magic, version, flags, reserved, n, count, data_len = PREAMBLE.unpack(pre)
        if magic != MAGIC:
            hint = " (it looks like a safetensors file: compress it)" if pre[8:9] == b"{" else ""
            raise self._fail(f"not a swarmpress checkpoint (magic {magic!r}){hint}")
        if version != VERSION:
            raise self._fail(f"checkpoint format version {version}; this build reads {VERSION}")
        if flags or reserved:
            raise self._fail(f"unknown flags {flags}/{reserved}: a newer format or corrupted")
        room = size - PREAMBLE.size - CRC.size
        if n > min(MAX_HEADER, room):
            raise self._fail(f"truncated or corrupted: a {n}-byte header in a {size}-byte file")
        if count > (room - n) // ENTRY.size:
            raise self._fail(f"truncated or corrupted: {count} index entries in a {size}-byte file")
        self.header = bytes(_read_exact(f, n, str(self.path)))
        table = bytes(_read_exact(f, ENTRY.size * count, str(self.path)))
        (crc,) = CRC.unpack(_read_exact(f, CRC.size, str(self.path)))
        if crc != zlib.crc32(table, zlib.crc32(self.header, zlib.crc32(pre))):
            raise self._fail("header checksum mismatch: the checkpoint is corrupted")
        try:
            self.metadata, tensors = parse_safetensors_header(self.header, data_len)
        except CheckpointError as exc:
            raise self._fail(f"the stored safetensors header: {exc}") from None
        if len(tensors) != count:
            raise self._fail(f"the index has {count} entries for {len(tensors)} tensors")
        self.data_len = data_len
        self.frames: list[FrameEntry] = []
        pos = PREAMBLE.size + n + ENTRY.size * count + CRC.size
        for i, t in enumerate(tensors):
            at = i * ENTRY.size
            begin, raw_len, offset, length, fcrc, rcrc, kind = ENTRY.unpack_from(table, at)
            bad = (
                (begin, raw_len) != (t.begin, t.nbytes)
                or offset != pos
                or kind not in KIND_NAMES
                or (kind == KIND_EMPTY) != (raw_len == 0)
                or (kind == KIND_EMPTY and length != 0)
                or (kind == KIND_CODEC and t.dtype not in FLOAT_DTYPES)
            )
            if bad:
                raise self._fail(f"index entry {i} (tensor {t.name!r}) is inconsistent")
            pos += length
            self.frames.append(FrameEntry(t, kind, offset, length, fcrc, rcrc))
        if pos != size:
            raise self._fail(
                f"the frames end at byte {pos} but the file has {size} bytes "
                f"({'truncated' if pos > size else 'trailing bytes'})"
            )
        self._by_name = {fe.tensor.name: i for i, fe in enumerate(self.frames)}

    # -- the file -----------------------------------------------------------------
    def __enter__(self) -> CheckpointReader:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def close(self) -> None:
        self._f.close()

    @property
    def original_size(self) -> int:
        """Bytes of the safetensors file this checkpoint gives back."""
        return 8 + len(self.header) + self.data_len

    def keys(self) -> list[str]:
        """Tensor names, in data-offset order."""
        return [fe.tensor.name for fe in self.frames]

    def read_frame(self, fe: FrameEntry) -> bytearray:
        """The frame bytes of one entry (the index already checked they lie in the file)."""
        self._f.seek(fe.offset)
        return _read_exact(self._f, fe.length, f"{self.path}: tensor {fe.tensor.name!r}")

    def decode(self, fe: FrameEntry, frame: bytes | bytearray) -> bytes | memoryview:
        """The tensor's original bytes from its frame: frame CRC, decode, raw CRC."""
        t = fe.tensor
        where = f"{self.path}: tensor {t.name!r}"
        if zlib.crc32(frame) != fe.frame_crc:
            raise CheckpointError(f"{where}: frame checksum mismatch: the checkpoint is corrupted")
        if fe.kind == KIND_EMPTY:
            raw: bytes | memoryview = b""
        elif fe.kind == KIND_ZSTD:
            try:
                raw = decompress_exact(frame, t.nbytes, "its zstd frame")
            except CodecError as exc:
                raise CheckpointError(f"{where}: {exc}") from None
        else:
            raw = self._decode_codec(t, frame, where)
        if zlib.crc32(raw) != fe.raw_crc:
            raise CheckpointMismatch(f"{where}: the decoded bytes differ from the original (CRC)")
        return raw

    @staticmethod
    def _decode_codec(t: TensorEntry, frame: bytes | bytearray, where: str) -> memoryview:
        try:
            fr = unpack_frame(frame)
            cls = codec_class(fr.codec_id)
            if cls.stream or not cls.lossless:
                raise CodecError(f"its frame is from the lossy or stream codec {fr.codec_id!r}")
            if fr.dtype.numpy != FLOAT_DTYPES[t.dtype] or fr.numel * fr.dtype.itemsize != t.nbytes:
                raise CodecError(
                    f"its frame holds {fr.numel} {fr.dtype.numpy} values, not {t.dtype} "
                    f"of {t.nbytes} bytes"
                )
            coder = get_codec(fr.codec_id)
            assert isinstance(coder, Codec)
            arr = coder.decode_frame(fr)
        except CodecError as exc:
            raise CheckpointError(f"{where}: {exc}") from None
        return memoryview(np.ascontiguousarray(arr).reshape(-1).view(np.uint8))

    def decoded(self, threads: int = 1) -> Iterator[tuple[FrameEntry, bytes | memoryview]]:
        """(entry, original bytes) of every tensor in offset order, `threads` decoding."""
        items = ((fe, self.read_frame(fe)) for fe in self.frames)
        return _ordered(items, lambda item: (item[0], self.decode(*item)), threads)

    def tensor(self, name: str, framework: str = "numpy") -> Any:
        """One tensor decoded: a numpy array ("numpy") or a torch tensor ("pt") of the
        header's dtype and shape (dtypes numpy lacks come back as raw uint8 bytes)."""
        if name not in self._by_name:
            raise CheckpointError(f"{self.path}: no tensor named {name!r}")
        fe = self.frames[self._by_name[name]]
        raw = self.decode(fe, self.read_frame(fe))
        t = fe.tensor
        if framework in ("pt", "torch"):
            return _to_torch(raw, t)
        if framework not in ("numpy", "np"):
            raise CheckpointError(f"framework must be 'numpy' or 'pt', not {framework!r}")
        dtype = NUMPY_DTYPES.get(t.dtype)
        if dtype is None:
            return np.frombuffer(bytearray(raw), dtype=np.uint8)
        return np.frombuffer(bytearray(raw), dtype=dtype).reshape(t.shape)

    def describe(self) -> list[dict[str, Any]]:
        """Per tensor: name, dtype, shape, bytes, compressed bytes, frame kind."""
        return [
            {"name": fe.tensor.name, "dtype": fe.tensor.dtype, "shape": list(fe.tensor.shape),
             "bytes": fe.tensor.nbytes, "compressed": fe.length, "kind": KIND_NAMES[fe.kind]}
            for fe in self.frames
        ]  # fmt: skip


#: torch's name for each safetensors dtype (as safetensors.torch maps them).
TORCH_DTYPES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16",
    "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U8": "uint8",
    "U16": "uint16", "U32": "uint32", "U64": "uint64", "BOOL": "bool", "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn", "F8_E4M3FNUZ": "float8_e4m3fnuz", "F8_E5M2": "float8_e5m2",
    "F8_E5M2FNUZ": "float8_e5m2fnuz", "F8_E8M0": "float8_e8m0fnu",
}  # fmt: skip


def _to_torch(raw: bytes | memoryview, t: TensorEntry) -> Any:
    import torch

    dtype = getattr(torch, TORCH_DTYPES.get(t.dtype, ""), None)
    if not isinstance(dtype, torch.dtype):
        raise CheckpointError(f"tensor {t.name!r}: this torch has no dtype for {t.dtype}")
    if not len(raw):
        return torch.empty(t.shape, dtype=dtype)
    return torch.frombuffer(bytearray(raw), dtype=dtype).reshape(t.shape)


# ----------------------------------------------------------------------------- decompress
def decompress_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    progress: Progress | None = None,
    *,
    force: bool = False,
    threads: int = 1,
) -> Report:
    """Give back the original .safetensors file of a SWCK file, byte for byte, streaming
    one tensor at a time; CheckpointMismatch if a tensor does not decode to its CRC."""
    threads = _check_threads(threads)
    start = time.perf_counter()
    with CheckpointReader(src) as reader:
        report = _report("decompress", reader, str(dst), threads)
        with _Output(dst, reader.path, force) as out:
            out.file.write(struct.pack("<Q", len(reader.header)))
            out.file.write(reader.header)
            for i, (fe, raw) in enumerate(reader.decoded(threads)):
                out.file.write(raw)
                report.add(fe.tensor.dtype, fe.tensor.nbytes, fe.length)
                if progress is not None:
                    progress(fe.tensor.name, i + 1, len(reader.frames))
    report.seconds = time.perf_counter() - start
    return report


def verify_checkpoint(
    src: str | os.PathLike, progress: Progress | None = None, *, threads: int = 1
) -> Report:
    """Decode every tensor of a SWCK file and check it against the CRC of the original
    bytes, writing nothing; CheckpointMismatch (exit 1) if one differs."""
    threads = _check_threads(threads)
    start = time.perf_counter()
    with CheckpointReader(src) as reader:
        report = _report("verify", reader, None, threads)
        for i, (fe, _raw) in enumerate(reader.decoded(threads)):
            report.add(fe.tensor.dtype, fe.tensor.nbytes, fe.length)
            if progress is not None:
                progress(fe.tensor.name, i + 1, len(reader.frames))
    report.seconds = time.perf_counter() - start
    return report


def _report(operation: str, reader: CheckpointReader, dst: str | None, threads: int) -> Report:
    return Report(
        operation, str(reader.path), dst, "(from the frames)", len(reader.frames),
        reader.original_size, reader.size, 0.0, threads,
    )  # fmt: skip


def load_tensor(path: str | os.PathLike, name: str, framework: str = "numpy") -> Any:
    """Decode one tensor of a SWCK file (numpy by default, "pt" for torch), reading only
    the header, the index and that tensor's frame."""
    with CheckpointReader(path) as reader:
        return reader.tensor(name, framework)
