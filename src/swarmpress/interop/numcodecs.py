"""swarmpress codecs as numcodecs codecs, so zarr and anything else that speaks numcodecs stores
float arrays with them: ids "swarmpress.lossless", "swarmpress.lossy" and "swarmpress.zstd".

Why it is built this way:

- Found through the "numcodecs.codecs" entry point (pyproject.toml), so
  `numcodecs.get_codec({"id": "swarmpress.lossless"})`, and zarr reopening an array written
  with one, works in a process that never imported swarmpress. Importing this module also
  registers the classes, for a source tree that was not pip-installed.
- numcodecs hands a codec a bare buffer. zarr hands it the chunk as an ndarray of the array's
  dtype, so a float32/float16 chunk says what it holds; numpy and zarr have no bfloat16, so a
  bf16 array is stored as a uint16 array and the codec is told with `dtype="bfloat16"` (the
  parameter also types raw bytes). The element count comes from the buffer's length, which
  must be a whole number of elements; the chunk's shape is kept when the buffer has one, so
  the lossy codec sees rows and channels (last axis).
- Each encoded chunk is a plain swarmpress frame rather than a bare payload: it says which
  codec, dtype and shape it holds and is checksummed, so a chunk read on its own (also by
  `swarmpress.decode`) is checked and never decodes to garbage, for 50-150 bytes of header.
- zarr: a format-2 array takes a numcodecs compressor as it is (zarr-python 2 and 3). A
  format-3 array needs a codec registered with zarr itself ("zarr.codecs"); not provided.
- Every refusal is a `swarmpress.CodecError` (a ValueError) that starts with the codec id.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

import ml_dtypes
import numpy as np

try:
    import numcodecs.abc
    import numcodecs.compat
    import numcodecs.registry
except ValueError as exc:  # numcodecs (to 0.16.6 at least) parses zfpy's version as integers
    raise ImportError(
        f"numcodecs cannot be imported here ({exc}); zfpy 1.0.1.post0 does this: "
        "install zfpy==1.0.1 or remove zfpy"
    ) from exc

from swarmpress.codecs import Codec, CodecError, get_codec, unpack_frame
from swarmpress.codecs.core.tensors import Container

#: The element types a chunk may hold, by the names the `dtype` parameter takes.
DTYPES: dict[str, np.dtype] = {
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
    "float32": np.dtype(np.float32),
}


def dtype_name(dtype: Any) -> str | None:
    """The `dtype` parameter's canonical name for a name, numpy dtype or type, or None."""
    if dtype is None:
        return None
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in DTYPES:
        raise CodecError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    return name


class SwarmpressNumcodec(numcodecs.abc.Codec):
    """A swarmpress codec behind numcodecs' interface: one chunk in, one swarmpress frame out.

    `dtype` (bfloat16, float16, float32 or None) is the element type of the chunk; None takes
    it from a float ndarray. The other parameters are the swarmpress codec's own.
    """

    codec_id: ClassVar[str]
    #: The swarmpress codec (registry id) this numcodecs codec wraps.
    swarmpress_id: ClassVar[str]

    def __init__(self, dtype: Any = None, **params: Any) -> None:
        try:
            self._dtype = dtype_name(dtype)
            codec = get_codec(self.swarmpress_id, **params)
        except CodecError as exc:
            raise self._error(str(exc).removeprefix(f"{self.swarmpress_id}: ")) from None
        assert isinstance(codec, Codec)  # a stateless codec: every chunk decodes on its own
        self._codec = codec

    @property
    def dtype(self) -> str | None:
        """The element type the codec was told, or None (taken from each chunk)."""
        return self._dtype

    @property
    def codec(self) -> Codec:
        """The swarmpress codec that does the work."""
        return self._codec

    def get_config(self) -> dict[str, Any]:
        """The id, dtype and swarmpress parameters: JSON, enough to rebuild an equal codec."""
        return {"id": self.codec_id, "dtype": self._dtype, **self._codec.config}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SwarmpressNumcodec:
        """Rebuild a codec from get_config() output (an "id" key, if present, must match)."""
        if not isinstance(config, dict):
            raise CodecError(f"{cls.codec_id}: a config is a dict, got {type(config).__name__}")
        config = dict(config)
        cid = config.pop("id", cls.codec_id)
        if cid != cls.codec_id:
            raise CodecError(f"{cls.codec_id}: config is for codec {cid!r}")
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items() if k != "id")
        return f"{type(self).__name__}({args})"

    def encode(self, buf: Any) -> bytes:
        """Compress one chunk (any buffer; see the class docstring) into a swarmpress frame."""
        return self._codec.encode(self._chunk(buf))

    def decode(self, buf: Any, out: Any = None) -> Any:
        """Decode one frame; into `out` (a writable buffer of exactly its size) when given,
        else as a new ndarray of the frame's dtype and shape."""
        try:
            src = numcodecs.compat.ensure_contiguous_ndarray(buf)
        except (TypeError, ValueError) as exc:
            raise self._error(f"cannot read the encoded chunk: {exc}") from None
        try:
            fr = unpack_frame(memoryview(src.view(np.uint8)))
        except CodecError as exc:
            raise self._error(f"bad chunk: {exc}") from None
        if fr.codec_id != self.swarmpress_id:
            raise self._error(
                f"this chunk was encoded by swarmpress codec {fr.codec_id!r}, "
                f"not {self.swarmpress_id!r}"
            )
        name = fr.dtype.numpy.name
        if self._dtype is not None and name != self._dtype:
            raise self._error(f"this chunk holds {name} values, not {self._dtype}")
        try:
            arr = self._codec.decode_frame(replace(fr, container=Container.NUMPY))
        except CodecError as exc:
            raise self._error(f"bad chunk: {exc}") from None
        if out is None:
            return arr
        try:
            dst = numcodecs.compat.ensure_contiguous_ndarray(out)
        except (TypeError, ValueError) as exc:
            raise self._error(f"cannot write into the output buffer: {exc}") from None
        if dst.nbytes != arr.nbytes:
            raise self._error(
                f"the chunk decodes to {arr.nbytes} bytes but the output buffer holds {dst.nbytes}"
            )
        if not dst.flags.writeable:
            raise self._error("the output buffer is read-only")
        dst.view(np.uint8)[...] = arr.reshape(-1).view(np.uint8)
        return out

    # -- helpers --------------------------------------------------------------------
    def _error(self, message: str) -> CodecError:
        return CodecError(f"{self.codec_id}: {message}")

    def _chunk(self, buf: Any) -> np.ndarray:
        """The chunk as a C-contiguous float array over the buffer's memory, in memory order
        (an F-ordered chunk is seen transposed, so its bytes come back as they were)."""
        try:
            arr = numcodecs.compat.ensure_ndarray(buf)
        except (TypeError, ValueError) as exc:
            raise self._error(f"cannot read the chunk: {exc}") from None
        if arr.flags.c_contiguous:
            pass
        elif arr.flags.f_contiguous:
            arr = arr.T
        else:
            raise self._error("the chunk is not contiguous in memory")
        dt, want = arr.dtype, DTYPES.get(self._dtype or "")
        if dt in DTYPES.values():
            if want is not None and dt != want:
                raise self._error(f"the chunk holds {dt.name} values but dtype is {self._dtype}")
            return arr
        if dt.kind in "ui" and (dt.itemsize == 1 or dt.isnative):
            if want is None:
                raise self._error(
                    f"a {dt} chunk holds no float type: say which with dtype= "
                    f"({', '.join(DTYPES)}); a bfloat16 array is stored as uint16"
                )
            if dt.itemsize == want.itemsize:
                return arr.view(want)
            flat = arr.reshape(-1).view(np.uint8)
            if flat.size % want.itemsize:
                raise self._error(
                    f"a chunk of {flat.size} bytes is not a whole number of {self._dtype} "
                    f"values ({want.itemsize} bytes each)"
                )
            return flat.view(want)
        if not dt.isnative:
            raise self._error(f"big-endian chunks ({dt.str}) are not supported; use little-endian")
        raise self._error(
            f"unsupported chunk dtype {dt}; swarmpress takes {', '.join(DTYPES)} "
            "(or their bits as unsigned integers, with dtype=)"
        )


class Lossless(SwarmpressNumcodec):
    """Bit-exact bf16/fp16/fp32 chunks (swarmpress `lossless`; parameter `mode`)."""

    codec_id = "swarmpress.lossless"
    swarmpress_id = "lossless"


class Lossy(SwarmpressNumcodec):
    """Float chunks within a quality target per chunk (swarmpress `lossy`; parameters target,
    value, mode, max_rank, threads)."""

    codec_id = "swarmpress.lossy"
    swarmpress_id = "lossy"


class Zstd(SwarmpressNumcodec):
    """Bit-exact chunks through Zstandard (swarmpress `zstd`; parameters level, threads)."""

    codec_id = "swarmpress.zstd"
    swarmpress_id = "zstd"


CODECS: tuple[type[SwarmpressNumcodec], ...] = (Lossless, Lossy, Zstd)

for _cls in CODECS:  # the entry point finds them too; this covers an uninstalled source tree
    numcodecs.registry.register_codec(_cls)

__all__ = ["CODECS", "DTYPES", "Lossless", "Lossy", "SwarmpressNumcodec", "Zstd", "dtype_name"]
