"""Where a bench ran: CPU model, cores, Python and library versions, date.

Speeds mean nothing without the machine, so every result and report carries this.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU model name from /proc/cpuinfo, else platform.processor(), else 'unknown'."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model") and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    """CPU cores this process may run on (affinity), falling back to os.cpu_count()."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (other work on the machine skews the speeds)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def machine_info() -> dict[str, Any]:
    """A JSON-ready description of the machine and software a bench runs on."""
    from swarmpress import __version__
    from swarmpress.bench.anchors import library_versions

    return {
        "cpu": cpu_model(),
        "cores_usable": usable_cores(),
        "cores_total": os.cpu_count() or 1,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "swarmpress": __version__,
        "libraries": library_versions(),
        "load_average": _load_average(),
        "date": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
    }
