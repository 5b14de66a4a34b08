"""The routing track's link to a sandboxed router: the twin's Transport over the harness.

The twin runs here, in the worker, never inside the sandbox: a router cannot reach the
simulation's memory, clock or result. It reaches the router through the harness, which
forwards each request to the router's server on the sandbox's loopback and measures the
exchange there, so that the 0.5 s call limit judges the router, not the pipe or how busy
the worker's own CPU is (the router's CPU is its own: the sandbox is pinned). A call that times
out leaves a reply in flight, so the transport is broken from then on (the task has failed
anyway); the task's own wall-clock budget (Apex: 30 s + 120 s per epoch) is checked on
every call.
"""

from __future__ import annotations

import time

from swarmpress.arena.sandbox import Session
from swarmpress.arena.sandbox.channel import ChannelClosed, ChannelError, ChannelTimeout
from swarmpress.twin.remote import TransportError, TransportTimeout


class SandboxTransport:
    """twin.remote.Transport to the server inside a relay-mode Session."""

    def __init__(self, session: Session, task_deadline: float | None = None) -> None:
        self.session = session
        self.deadline = task_deadline
        self.broken = ""
        self.last_seconds: float | None = None  # the last call's time, measured by the harness

    def request(
        self, method: str, path: str, body: bytes | None, timeout: float
    ) -> tuple[int, bytes]:
        if self.broken:
            raise TransportError(self.broken)
        if self.deadline is not None and time.monotonic() > self.deadline:
            self.broken = "the task ran past its wall-clock budget"
            raise TransportTimeout(self.broken)
        self.last_seconds = None
        try:
            # The wait here has slack for the pipe and this worker's own scheduling; the
            # call is judged by the time the harness measured next to the router.
            status, data, self.last_seconds = self.session.request(
                method, path, body, 2 * timeout + 1.0
            )
            return status, data
        except ChannelTimeout:
            self.broken = f"{path} gave no answer within {timeout:g} s"
            raise TransportTimeout(self.broken) from None
        except ChannelClosed:
            self.broken = self.session.exit_reason("the router's sandbox ended")
            raise TransportError(self.broken) from None
        except ChannelError as exc:
            self.broken = f"the router's sandbox sent an unreadable reply: {exc}"
            raise TransportError(self.broken) from None
        except RuntimeError as exc:  # the harness could not reach the server
            raise TransportError(f"{path}: {exc}") from None

    def __repr__(self) -> str:
        return f"sandbox:{self.session.engine}"
