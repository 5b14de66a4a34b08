"""Emulated internet links: the sender's uplink as a serialization queue, plus propagation delay.

A 2-core machine plays a swarm on consumer internet by holding each outgoing message in
the sender until the emulated link would have delivered it: the uplink drains at the
link's bandwidth (a token bucket; with no burst, the default, exactly a bottleneck link
that serializes one message after another, as the twin models it; a burst lets that many
bytes out at once, as Linux's tbf does), then the message waits the one-way latency plus
jitter. Messages to one destination keep their order, as over one TCP connection. The
shaping runs in user space inside the transport, so it needs no root, no traffic control
and no network namespaces, and it works unchanged when the peers are on different machines.
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass

from swarmpress.errors import UsageError

_UNITS = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}
_RATE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kmg]?)(bit|bps)?(?:/s)?$", re.IGNORECASE)
_TIME = re.compile(r"^(\d+(?:\.\d+)?)\s*(us|ms|s)?$", re.IGNORECASE)
_TIME_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, None: 1e-3}
UNLIMITED = ("none", "off", "unlimited", "lan", "local")


class LinkError(UsageError, ValueError):
    """A link spec that does not parse; the message shows the accepted form."""


@dataclass(frozen=True)
class LinkSpec:
    """One direction of a link: bits per second (None: as fast as the machine), one-way
    latency and jitter in seconds, and the burst the token bucket allows in bytes."""

    bandwidth_bps: float | None = None
    latency_s: float = 0.0
    jitter_s: float = 0.0
    burst_bytes: int = 0

    @property
    def unlimited(self) -> bool:
        return self.bandwidth_bps is None and self.latency_s == 0 and self.jitter_s == 0

    def transfer_seconds(self, nbytes: int) -> float:
        """Time the link needs to carry nbytes, latency included (no queueing)."""
        wire = 0.0 if self.bandwidth_bps is None else 8.0 * nbytes / self.bandwidth_bps
        return wire + self.latency_s

    def describe(self) -> str:
        if self.unlimited:
            return "unlimited"
        bw = "unlimited" if self.bandwidth_bps is None else _fmt_rate(self.bandwidth_bps)
        out = f"{bw}:{self.latency_s * 1e3:g}ms"
        return out + (f":{self.jitter_s * 1e3:g}ms" if self.jitter_s else "")

    def to_json(self) -> dict:
        return {
            "spec": self.describe(),
            "bandwidth_bps": self.bandwidth_bps,
            "latency_s": self.latency_s,
            "jitter_s": self.jitter_s,
            "burst_bytes": self.burst_bytes,
        }


def _fmt_rate(bps: float) -> str:
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bps >= scale:
            return f"{bps / scale:g}{unit}"
    return f"{bps:g}bit"


def _seconds(text: str, spec: str) -> float:
    m = _TIME.match(text.strip())
    if not m:
        raise LinkError(f"link {spec!r}: {text!r} is not a time (e.g. 50ms, 0.2s, 300us)")
    return float(m.group(1)) * _TIME_UNITS[m.group(2) and m.group(2).lower()]


def parse_link(spec: str) -> LinkSpec:
    """'100mbit:50ms[:5ms]' (bandwidth, one-way latency, jitter); 'none' for no shaping.

    Bandwidth units: bit, kbit, mbit, gbit (also kbps, mbps, gbps, all bits per second);
    times: us, ms (the default) or s.
    """
    text = spec.strip().lower()
    if text in UNLIMITED:
        return LinkSpec()
    parts = [p.strip() for p in text.split(":")]
    if len(parts) > 3 or not parts[0]:
        raise LinkError(
            f"link {spec!r}: expected BANDWIDTH[:LATENCY[:JITTER]], e.g. 100mbit:50ms:5ms"
        )
    if parts[0] in UNLIMITED:
        bw = None
    else:
        m = _RATE.match(parts[0])
        if not m:
            raise LinkError(
                f"link {spec!r}: {parts[0]!r} is not a bandwidth in bits per second "
                "(e.g. 100mbit, 1gbit, 500kbit)"
            )
        bw = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if bw <= 0:
            raise LinkError(f"link {spec!r}: bandwidth must be above 0")
    latency = _seconds(parts[1], spec) if len(parts) > 1 else 0.0
    jitter = _seconds(parts[2], spec) if len(parts) > 2 else 0.0
    return LinkSpec(bw, latency, jitter)


class Shaper:
    """When each message handed to the uplink reaches its destination (thread-safe)."""

    def __init__(self, spec: LinkSpec, seed: int = 0) -> None:
        self.spec = spec
        self._rate = None if spec.bandwidth_bps is None else spec.bandwidth_bps / 8.0
        self._tokens = float(spec.burst_bytes)
        self._t = None
        self._last: dict[str, float] = {}
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def schedule(self, dst: str, nbytes: int, now: float) -> float:
        """Delivery time of nbytes sent to dst at `now` (after those already queued)."""
        spec = self.spec
        with self._lock:
            ready = now
            if self._rate is not None:
                if self._t is not None:
                    elapsed = max(0.0, now - self._t)
                    self._tokens = min(spec.burst_bytes, self._tokens + elapsed * self._rate)
                self._t = now
                self._tokens -= nbytes
                if self._tokens < 0:
                    ready = now - self._tokens / self._rate
            delay = spec.latency_s
            if spec.jitter_s:
                delay = max(0.0, delay + self._rng.uniform(-spec.jitter_s, spec.jitter_s))
            at = max(ready + delay, self._last.get(dst, 0.0))
            self._last[dst] = at
            return at
