"""Compressed point-to-point sends over `torch.distributed` (gloo on CPU, nccl on GPU).

A frame's length is known only once it is encoded, so each send is two messages: the
length (one int64) and the frame bytes (uint8). The receiver learns dtype and shape from
the frame itself. A declared length beyond `max_bytes` (default: the decode limit,
swarmpress.codecs max_decode_bytes) is refused before anything is allocated, and the frame
is parsed in place from the receive buffer (its header is checked before its checksum is
computed), so a forged peer cannot make a receiver touch memory it did not send.

What a forged peer can still do lies in the transport, not here: gloo aborts the receiving
process when a message is longer than the buffer posted for it, and accepts a shorter one
without saying so (the frame's header and checksum then refuse it). Use authenticated
peers on untrusted networks.
"""

from __future__ import annotations

from collections import deque
from typing import Any, ClassVar

import torch
import torch.distributed as dist

from swarmpress.codecs import CodecError, Role, decode, max_decode_bytes
from swarmpress.codecs.core.frame import MIN_FRAME
from swarmpress.torch.codecs import CodecLike, stateless

_FRAME_SLACK = 1 << 20  # header, params and per-chunk side information above the raw bytes


def _wire_device(group: Any) -> torch.device:
    """Where the group's collectives want their tensors: the current GPU for nccl."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _frame_tensors(blob: bytes, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    size = torch.tensor([len(blob)], dtype=torch.int64, device=device)
    payload = torch.frombuffer(bytearray(blob), dtype=torch.uint8).to(device)
    return size, payload


def _payload_buffer(
    size: torch.Tensor, src: int, device: torch.device, max_bytes: int | None
) -> torch.Tensor:
    n = int(size.item())
    limit = max_decode_bytes() + _FRAME_SLACK if max_bytes is None else max_bytes
    if not MIN_FRAME <= n <= limit:
        raise CodecError(
            f"peer {src} declared a {n}-byte frame; refused (frames are {MIN_FRAME} to "
            f"{limit} bytes here)"
        )
    return torch.empty(n, dtype=torch.uint8, device=device)


def _length_buffer(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int64, device=device)  # zeros: a short message shows


def _decode_buffer(payload: torch.Tensor, device: Any) -> torch.Tensor:
    """Decode a received frame in place (no copy of what the peer only declared)."""
    host = payload if payload.device.type == "cpu" else payload.cpu()
    return as_torch(decode(memoryview(host.numpy()), device))


def as_torch(out: Any) -> torch.Tensor:
    """A decoded tensor as torch (frames of numpy arrays decode to numpy)."""
    return out if isinstance(out, torch.Tensor) else torch.from_numpy(out)


def isend_frame(blob: bytes, dst: int, group: Any = None, tag: int = 0) -> PendingSend:
    """Send an encoded frame (its length, then its bytes) without blocking."""
    size, payload = _frame_tensors(blob, _wire_device(group))
    works = [
        dist.isend(size, dst, group=group, tag=tag),
        dist.isend(payload, dst, group=group, tag=tag),
    ]
    return PendingSend(works, (size, payload), len(blob) + size.element_size())


def recv_buffer(
    src: int | None = None, group: Any = None, tag: int = 0, max_bytes: int | None = None
) -> torch.Tensor:
    """The next frame `src` sent (any rank when None), as a uint8 tensor on the wire device;
    its declared length is checked first."""
    wire = _wire_device(group)
    size = _length_buffer(wire)
    sender = dist.recv(size, src, group=group, tag=tag)
    payload = _payload_buffer(size, sender, wire, max_bytes)
    dist.recv(payload, sender, group=group, tag=tag)
    return payload


def recv_frame(
    src: int | None = None, group: Any = None, tag: int = 0, max_bytes: int | None = None
) -> memoryview:
    """The next frame `src` sent, as a view of the host buffer it arrived in."""
    payload = recv_buffer(src, group, tag, max_bytes)
    host = payload if payload.device.type == "cpu" else payload.cpu()
    return memoryview(host.numpy())


def send(
    tensor: torch.Tensor,
    dst: int,
    codec: CodecLike = "lossy",
    group: Any = None,
    role: Role | str = Role.ACTIVATION,
    tag: int = 0,
) -> int:
    """Encode `tensor` and send it to rank `dst`; returns the bytes that crossed."""
    blob = stateless(codec, "send").encode(tensor.detach().contiguous(), role)
    return isend_frame(blob, dst, group, tag).wait()


def recv(
    src: int | None = None, group: Any = None, device: Any = None, tag: int = 0,
    max_bytes: int | None = None,
) -> Any:  # fmt: skip
    """The next tensor `src` sent (any rank when None), decoded onto `device` (host default);
    a frame declared longer than max_bytes (default: the decode limit) is refused."""
    return _decode_buffer(recv_buffer(src, group, tag, max_bytes), device)


class PendingSend:
    """An isend in flight: keeps its buffers alive until wait()."""

    def __init__(self, works: list[Any], keep: tuple[torch.Tensor, ...], nbytes: int) -> None:
        self._works, self._keep, self.nbytes = works, keep, nbytes

    def is_completed(self) -> bool:
        return all(w.is_completed() for w in self._works)

    def wait(self) -> int:
        """Block until the frame is sent; the bytes that crossed."""
        for w in self._works:
            w.wait()
        self._keep = ()
        return self.nbytes


class PendingRecv:
    """An irecv in flight. Frames on one channel (peer, group, tag) arrive in order, each a
    length then its bytes, so only the oldest pending receive of a channel has its length
    posted; wait() on a later one first completes those before it. A receive that fails
    keeps its error and leaves the channel to the next one."""

    _channels: ClassVar[dict[tuple[int, int, int], deque[PendingRecv]]] = {}

    def __init__(self, src: int, group: Any, device: Any, tag: int, max_bytes: int | None) -> None:
        self._wire = _wire_device(group)
        self._src, self._group, self._device, self._tag = src, group, device, tag
        self._max_bytes = max_bytes
        self._size = _length_buffer(self._wire)
        self._work: Any = None
        self._out: Any = None
        self._error: BaseException | None = None
        self._channel = (src, id(dist.group.WORLD if group is None else group), tag)
        queue = self._channels.setdefault(self._channel, deque())
        queue.append(self)
        if len(queue) == 1:
            self._post()

    def _post(self) -> None:
        self._work = dist.irecv(self._size, self._src, group=self._group, tag=self._tag)

    def is_completed(self) -> bool:
        return self._out is not None or self._error is not None

    def wait(self) -> Any:
        """Block until the tensor has arrived; the decoded tensor (or the receive's error)."""
        while not self.is_completed():
            queue = self._channels[self._channel]
            head = queue[0]
            try:
                head._finish()
            except Exception as exc:  # kept for that handle's own wait()
                head._error = exc
            finally:
                queue.popleft()
                if queue:
                    queue[0]._post()
                else:
                    del self._channels[self._channel]
        if self._error is not None:
            raise self._error
        return self._out

    def _finish(self) -> None:
        self._work.wait()
        payload = _payload_buffer(self._size, self._src, self._wire, self._max_bytes)
        dist.recv(payload, self._src, group=self._group, tag=self._tag)
        self._out = _decode_buffer(payload, self._device)


def isend(
    tensor: torch.Tensor,
    dst: int,
    codec: CodecLike = "lossy",
    group: Any = None,
    role: Role | str = Role.ACTIVATION,
    tag: int = 0,
) -> PendingSend:
    """Encode now, send without blocking; wait() on the result before reusing the group's tag."""
    blob = stateless(codec, "isend").encode(tensor.detach().contiguous(), role)
    return isend_frame(blob, dst, group, tag)


def irecv(
    src: int, group: Any = None, device: Any = None, tag: int = 0, max_bytes: int | None = None
) -> PendingRecv:
    """Start receiving the next tensor from `src`; wait() returns it decoded."""
    return PendingRecv(src, group, device, tag, max_bytes)


__all__ = [
    "PendingRecv", "PendingSend", "as_torch", "irecv", "isend", "isend_frame", "recv",
    "recv_buffer", "recv_frame", "send",
]  # fmt: skip
