"""The activation tracking buffer: the recent events a routing or balancing policy may see.

Contract (DESIGN.md "Twin contract", Apex IOTA simulator): an event is {activation_id
(str), direction, action, start_time, end_time|null, miner_id (str, the MinerInfo
miner_id), layer (int)}; the buffer keeps about 1,920 recent events and is cleared between
epochs. In-process policies read the records directly (plus a few statistics derived from
them and kept up to date here, keyed by the caller's own miner key, so a policy need not
rescan the buffer on every call); the HTTP router gets the same events as JSON.
"""

from __future__ import annotations

import datetime as _dt
import json
from collections import deque

FORWARD, BACKWARD = 0, 1
DIRECTIONS = ("forward", "backward")
RECEIVE, QUEUING, PROCESSING, NOTIFY = 0, 1, 2, 3
ACTIONS = ("receive", "queuing", "processing", "notify_orchestrator")
EPOCH = _dt.datetime(2025, 1, 1, tzinfo=_dt.UTC)  # simulated time 0 as a wall-clock time


def iso(t: float) -> str:
    """Simulated seconds as an ISO-8601 UTC timestamp to the millisecond (contract format)."""
    return (EPOCH + _dt.timedelta(seconds=round(t, 3))).isoformat(timespec="milliseconds")[
        :-6
    ] + "Z"


class Event:
    """One tracked event; end is None while it lasts. `miner` keys the statistics (any
    hashable), `label` is the miner_id the JSON names (the contract's MinerInfo.miner_id)."""

    __slots__ = (
        "_json",
        "act",
        "action",
        "counted",
        "direction",
        "end",
        "label",
        "layer",
        "miner",
        "start",
    )  # fmt: skip

    def __init__(self, act, direction, action, start, miner, label, layer):
        self.act, self.direction, self.action = act, direction, action
        self.start, self.end = start, None
        self.miner, self.label, self.layer = miner, label, layer
        self._json = None
        self.counted = True  # open and still in the buffer: counted in open_by_miner

    def to_json(self) -> str:
        if self._json is None or self.end is None:
            s = json.dumps(
                {
                    "activation_id": str(self.act),
                    "direction": DIRECTIONS[self.direction],
                    "action": ACTIONS[self.action],
                    "start_time": iso(self.start),
                    "end_time": None if self.end is None else iso(self.end),
                    "miner_id": str(self.label),
                    "layer": int(self.layer),
                },
                separators=(",", ":"),
            )
            if self.end is None:
                return s
            self._json = s
        return self._json


class Tracker:
    """A bounded buffer of events plus per-miner statistics derived from it."""

    def __init__(self, capacity: int = 1920) -> None:
        self.capacity = capacity
        self.events: deque[Event] = deque()
        self.open_by_miner: dict[int, int] = {}
        self.proc_ema: dict[int, float] = {}  # recent processing seconds per miner
        self.done_by_dir: tuple[dict[int, int], dict[int, int]] = ({}, {})  # fwd, bwd
        self.generation = 0  # bumped by clear(): policies reset per-epoch state
        self.seq = 0  # events ever added (policies use it to read only what is new)

    def open(self, act, direction, action, t, miner, label, layer) -> Event | None:
        """Start an event (None when the buffer is disabled); `label` is its JSON miner_id."""
        if self.capacity == 0:
            return None
        if len(self.events) >= self.capacity:
            old = self.events.popleft()
            if old.counted:
                self.open_by_miner[old.miner] -= 1
                old.counted = False
        ev = Event(act, direction, action, t, miner, label, layer)
        self.events.append(ev)
        self.open_by_miner[miner] = self.open_by_miner.get(miner, 0) + 1
        self.seq += 1
        return ev

    def instant(self, act, direction, action, t, miner, label, layer) -> None:
        """An event that starts and ends at t (receive, notify_orchestrator)."""
        ev = self.open(act, direction, action, t, miner, label, layer)
        if ev is not None:
            self.close(ev, t)

    def close(self, ev: Event | None, t: float) -> None:
        if ev is None or ev.end is not None:
            return
        ev.end = t
        if ev.counted:
            self.open_by_miner[ev.miner] -= 1
            ev.counted = False
        if ev.action == PROCESSING:
            d = t - ev.start
            old = self.proc_ema.get(ev.miner)
            self.proc_ema[ev.miner] = d if old is None else 0.7 * old + 0.3 * d
            per = self.done_by_dir[ev.direction]
            per[ev.miner] = per.get(ev.miner, 0) + 1

    def clear(self) -> None:
        for ev in self.events:
            ev.counted = False
        self.events.clear()
        self.open_by_miner.clear()
        self.done_by_dir[0].clear()
        self.done_by_dir[1].clear()
        self.generation += 1

    def to_json(self) -> str:
        return "[" + ",".join(e.to_json() for e in self.events) + "]"
