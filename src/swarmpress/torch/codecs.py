"""The codec pair one direction of a link uses: a stateless codec, or a stream's two ends.

Every entry point in this package names its codecs by spec ("lossy", "topk:density=0.02",
"lossy-stream") or passes a codec object; this module turns either into an encoder and a
decoder for one direction, so a stream codec (whose receiver follows the stream) works
wherever one sender talks to one receiver in order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from swarmpress.codecs import BaseCodec, Codec, CodecError, ErrorFeedback, build_codec, decode

CodecLike = str | BaseCodec


def resolve(codec: CodecLike) -> BaseCodec:
    """A codec object from a spec string or a codec object; CodecError naming the problem."""
    if isinstance(codec, BaseCodec):
        return codec
    if isinstance(codec, str):
        return build_codec(codec)
    raise CodecError(f"a codec must be a spec string or a codec, got {type(codec).__name__}")


def stateless(codec: CodecLike, what: str) -> Codec:
    """A stateless codec (frames decode on their own), or CodecError saying where it is used."""
    c = resolve(codec)
    if not isinstance(c, Codec):
        raise CodecError(
            f"{what}: {c.codec_id} is a stream codec; here every frame must decode on its own"
        )
    return c


@dataclass
class Direction:
    """One direction of a link: how its tensors are encoded and decoded, and what crossed."""

    codec: BaseCodec
    encoder: Any  # .encode(tensor, role) -> bytes
    decoder: Any  # .decode(blob, device) -> tensor
    frames: int = 0
    raw_bytes: int = 0
    wire_bytes: int = 0

    @classmethod
    def of(cls, codec: CodecLike, error_feedback: bool = False) -> Direction:
        """Ends for a codec: a stream codec's encoder and decoder, else the codec itself
        (behind ErrorFeedback when asked) and swarmpress.decode."""
        c = resolve(codec)
        if c.stream:
            if error_feedback:
                raise CodecError(f"error feedback wraps a stateless codec, not {c.codec_id}")
            return cls(c, c.encoder(), c.decoder())
        enc = ErrorFeedback(c) if error_feedback else c
        return cls(c, enc, _Stateless())

    def count(self, tensor: Any, blob: bytes) -> None:
        self.frames += 1
        self.raw_bytes += tensor.numel() * tensor.element_size()
        self.wire_bytes += len(blob)

    def stats(self) -> dict[str, Any]:
        """Frames, bytes before and after the codec, and their ratio."""
        ratio = self.wire_bytes / self.raw_bytes if self.raw_bytes else None
        return {
            "codec": self.codec.get_config(),
            "frames": self.frames,
            "raw_bytes": self.raw_bytes,
            "wire_bytes": self.wire_bytes,
            "ratio": ratio,
        }


class _Stateless:
    """swarmpress.decode as a decoder object."""

    @staticmethod
    def decode(blob: bytes, device: Any = None) -> Any:
        return decode(blob, device)


__all__ = ["CodecLike", "Direction", "resolve", "stateless"]
