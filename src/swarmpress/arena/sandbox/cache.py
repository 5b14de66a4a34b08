"""Every page of the files sandboxes share kept resident in the host's page cache.

Which pages of a shared read-only file are cached is state that outlives a sandbox: a red
team's compress call read chosen pages of big files under /usr (one bit each), and the
decompress call, in a fresh sandbox, read the bits back by timing reads or with
`preadv2(RWF_NOWAIT)`, so data crossed outside the output. The sandboxes now share only
core.View's files (the environment, its sysroot, the base interpreter), and the worker
reads every page of them before it runs a call (at most once per `every_s`). With every
page resident a call cannot set a bit (reading a cached page changes nothing) and cannot
clear one: it has no eviction call (bubblewrap's filter refuses fadvise, madvise
PAGEOUT/COLD and the like; gVisor serves none of them from the host), and its memory
cgroup reclaims only pages charged to it, while these are charged to the worker.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable

_lock = threading.Lock()
_last: dict[tuple[str, ...], float] = {}
_CHUNK = 1 << 20


def _files(roots: Iterable[str], skip: set[str]) -> Iterable[str]:
    for root in roots:
        if os.path.isfile(root):
            yield root
            continue
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if os.path.join(d, x) not in skip]
            for f in files:
                p = os.path.join(d, f)
                if not os.path.islink(p):
                    yield p


def read_all(roots: Iterable[str], skip: Iterable[str] = ()) -> tuple[int, int]:
    """Read every regular file below roots (folders in skip left out): (files, bytes)."""
    buf = bytearray(_CHUNK)
    n_files = n_bytes = 0
    for p in _files(roots, set(skip)):
        try:
            fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            while got := os.readv(fd, [buf]):
                n_bytes += got
        except OSError:
            pass
        finally:
            os.close(fd)
        n_files += 1
    return n_files, n_bytes


def warm(roots: list[str], skip: list[str], every_s: float = 60.0,
         clock: Callable[[], float] = time.monotonic) -> bool:  # fmt: skip
    """Make the shared files resident unless done for these roots within every_s;
    True when a pass ran. Concurrent callers wait for one pass."""
    key = tuple(sorted(roots))
    with _lock:
        if key in _last and clock() - _last[key] < every_s:
            return False
        read_all(roots, skip)
        _last[key] = clock()
        return True
