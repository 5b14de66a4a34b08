"""The worker's side of the pipe protocol with the harness inside a sandbox.

Binary frames, no JSON: a frame is one kind byte, a 4-byte big-endian length, then the
payload. Everything read here comes from untrusted code (a submission can write to the
harness's reply pipe itself), so every frame is checked against a per-kind size cap before
it is read, text is decoded leniently, stripped of NUL bytes and capped, and anything else
is a ChannelError: the call fails with a reason, the worker never does.

The harness (harness.py, standard library only) keeps its own copy of the kind numbers.
"""

from __future__ import annotations

import os
import select
import struct
import time

from swarmpress.errors import SwarmpressError

HEAD = struct.Struct(">BI")

# worker -> harness
CALL = 1  # payload: the input bytes of one compress/decompress call
REQUEST = 2  # payload: ">BH" method (0 GET, 1 POST), path length, path, body
# harness -> worker
READY = 10  # empty: the solution is loaded (or its server answers /health)
DONE = 11  # payload: the call's output bytes
ERROR = 12  # payload: UTF-8 text, why the call or the load failed
RESPONSE = 13  # payload: ">H" HTTP status, then the body
FAILED = 14  # payload: UTF-8 text, why an HTTP request to the solution's server failed

TEXT_CAP = 64 << 10  # the most a text frame may declare
REASON_CHARS = 500  # the most of it kept


class ChannelError(SwarmpressError):
    """The sandbox sent something that is not a frame it may send."""


class ChannelOversize(ChannelError):
    """A frame declared more bytes than its kind may carry (e.g. an output over the cap)."""

    def __init__(self, kind: int, size: int, cap: int) -> None:
        super().__init__(f"declared {size} bytes where at most {cap} may come")
        self.kind, self.size, self.cap = kind, size, cap


class ChannelTimeout(SwarmpressError):
    """No complete frame before the deadline."""


class ChannelClosed(SwarmpressError):
    """The sandbox closed its end (it exited or crashed)."""


def clean_text(data: bytes, limit: int = REASON_CHARS) -> str:
    """Untrusted bytes as printable text: invalid UTF-8 replaced, NUL removed, capped."""
    text = data.decode("utf-8", "replace").replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def frame(kind: int, payload: bytes = b"") -> bytes:
    return HEAD.pack(kind, len(payload)) + payload


def request_payload(method: str, path: str, body: bytes | None) -> bytes:
    raw = path.encode()
    return struct.pack(">BH", 1 if method == "POST" else 0, len(raw)) + raw + (body or b"")


class Reader:
    """Reads frames from the harness's reply pipe under a deadline."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.pending = bytearray()

    def _read(self, n: int, deadline: float) -> bytes:
        while len(self.pending) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelTimeout
            ready, _, _ = select.select([self.fd], [], [], left)
            if not ready:
                raise ChannelTimeout
            chunk = os.read(self.fd, min(1 << 20, max(65536, n - len(self.pending))))
            if not chunk:
                raise ChannelClosed
            self.pending += chunk
        out = bytes(self.pending[:n])
        del self.pending[:n]
        return out

    def receive(self, deadline: float, caps: dict[int, int]) -> tuple[int, bytes]:
        """One frame whose kind is in caps and whose length is within its cap."""
        kind, n = HEAD.unpack(self._read(HEAD.size, deadline))
        if kind not in caps:
            raise ChannelError(f"sent a frame of unknown kind {kind}")
        if n > caps[kind]:
            raise ChannelOversize(kind, n, caps[kind])
        return kind, self._read(n, deadline)


def write_all(fd: int, data: bytes, deadline: float) -> None:
    """Write everything before the deadline to a non-blocking pipe (a sandbox that stops
    reading cannot hang the worker)."""
    view = memoryview(data)
    while view:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ChannelTimeout
        _, ready, _ = select.select([], [fd], [], left)
        if ready:
            try:
                view = view[os.write(fd, view[: 1 << 16]) :]
            except BlockingIOError:
                continue
            except BrokenPipeError:
                raise ChannelClosed from None
