"""Stream codecs: frames that decode only in order, with state objects for both ends.

A stream codec learns from the tensors it has already sent (lossy-stream learns a channel
basis), so its receiver must see every frame, in order. As PyTorch keeps `PowerSGDState`
apart from the hook, the codec here is configuration only; it hands out an encoder and a
decoder, each a state object with `state_dict()` / `load_state_dict()` / `reset()`, so a
restarted sender or receiver continues the stream with byte-identical frames. Their
frames carry the stream flag, and `swarmpress.decode` refuses them with a message that
says what to use instead.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from swarmpress.codecs.core import frame as _frame
from swarmpress.codecs.core.base import (
    BaseCodec,
    Role,
    checked_output,
    host_array,
    out_of_memory,
    parse_role,
    same_params,
)
from swarmpress.codecs.core.errors import CodecError
from swarmpress.codecs.core.tensors import DType


class StreamCodec(BaseCodec):
    """Configuration of a stream codec: `encoder()` and `decoder()` make the two ends."""

    stream: ClassVar[bool] = True

    @abstractmethod
    def encoder(self) -> StreamEncoder:
        """A new sending end: its first frame starts a stream."""

    @abstractmethod
    def decoder(self) -> StreamDecoder:
        """A new receiving end: it decodes a stream's frames from the first, in order."""


class StreamState(ABC):
    """One end of one stream: what it learnt so far, saved and restored as a state dict."""

    def __init__(self, codec: StreamCodec) -> None:
        self.codec = codec
        self.config = codec.config
        self.reset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.codec!r})"

    @abstractmethod
    def reset(self) -> None:
        """Forget the stream: the next frame starts (or must start) a new one."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the stream elsewhere (numpy arrays and ints)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(); CodecError if it is malformed or from another version."""


class StreamEncoder(StreamState):
    """The sending end of one stream: encode() tensors in order."""

    def encode(self, tensor: Any, role: Role | str = Role.UNSPECIFIED) -> bytes:
        """The next frame of the stream; the state changes only once the frame exists."""
        role = parse_role(role)
        arr, info = host_array(tensor)
        return self.codec.pack(info, self.encode_array(arr, role))

    @abstractmethod
    def encode_array(self, arr: np.ndarray, role: Role) -> bytes:
        """Payload for a C-contiguous float array, learning from it for later frames."""


class StreamDecoder(StreamState):
    """The receiving end of one stream: decode() its frames in the order they were made."""

    def decode(self, blob: bytes | bytearray | memoryview, device: Any = None) -> Any:
        """The next tensor of the stream; a frame out of order is refused and changes nothing."""
        fr = _frame.unpack(blob)
        self.codec.check_frame(fr)
        if not same_params(fr.params, self.codec.frame_params()):
            raise CodecError(
                f"{self.codec.codec_id}: the frame's parameters {fr.params} are not this "
                f"stream's {self.codec.frame_params()}"
            )
        try:
            arr = self.decode_array(fr.payload, fr.dtype, fr.shape)
        except MemoryError:
            raise out_of_memory(self.codec.codec_id, fr) from None
        out = checked_output(self.codec.codec_id, arr, fr, device)
        self.commit()
        return out

    @abstractmethod
    def decode_array(
        self, payload: bytes | memoryview, dtype: DType, shape: tuple[int, ...]
    ) -> np.ndarray:
        """Rebuild the array from payload bytes and the stream so far, without changing the
        state: what the frame teaches is staged for commit(). Never trust the payload."""

    @abstractmethod
    def commit(self) -> None:
        """Take into the state what the last decode_array() staged (the tensor was delivered)."""


__all__ = ["StreamCodec", "StreamDecoder", "StreamEncoder", "StreamState"]
