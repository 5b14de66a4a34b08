"""The arena's sandbox: where untrusted submissions run, one fresh sandbox per call.

Two engines (DESIGN.md "Arena contract"; docs/arena.md says which ran each evaluation):
gVisor (`gvisor.py`, the default: a user-space kernel between the entry and the host)
and bubblewrap with a libseccomp filter (`bwrap.py`, the fallback where gVisor cannot run).
Both mount only the solution environment (`envs.py`), never this project, the arena home
or the pool's sources; both cap the whole sandbox's memory with a cgroup, pin it to one
CPU and give it no network. `session.py` runs the conversation with the harness inside.
"""

from swarmpress.arena.sandbox.core import CallResult, Limits, SandboxUnavailable
from swarmpress.arena.sandbox.session import (
    ENGINES,
    Session,
    engine_unavailable,
    pick_engine,
    run_call,
)


def check_available(engine: str = "auto") -> str:
    """The engine that will run sandboxes here; SandboxUnavailable (saying what to install
    or change) when none can."""
    return pick_engine(engine)


__all__ = [
    "ENGINES",
    "CallResult",
    "Limits",
    "SandboxUnavailable",
    "Session",
    "check_available",
    "engine_unavailable",
    "pick_engine",
    "run_call",
]
