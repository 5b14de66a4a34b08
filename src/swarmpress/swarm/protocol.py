"""The swarm protocol: one frozen dataclass per message kind, parsed and checked explicitly.

`framing.Message` is the envelope (kind, JSON head, binary parts); this module says what
each kind carries. `read(msg)` turns an envelope into its typed message, checking every
field's presence and type (and the number of binary parts), and raises ProtocolError
naming the kind and the field; a kind this version does not know reads as `Unknown`, so a
newer peer's extra messages are ignored rather than refused. `message.envelope()` writes
the head in the order this protocol has always used, so the bytes on the wire do not change.

Who sends what:

    worker -> orchestrator   hello, hb, ready, ev, loss, done, failed, stepped, merged,
                             bye, crash, standing (the answer to rejoin)
    orchestrator -> worker   init, reject, hb, dir, step, drop, resync, resume, stop,
                             rejoin (a restarted or standby orchestrator took over),
                             fwd (the first stage's token block)
    worker -> worker         fwd, bwd, delta, state
    transport (local only)   _bad: a message that did not parse at all
    calibration              ping, pong

Checks that need the run's state (a stage number in range, a path that names this worker,
a step that is current) belong to the handlers; here are the checks every reader shares.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

from swarmpress.swarm.framing import Message, WireError, check_address

Key = tuple[int, int, int]  # a sample attempt: (step, sample, attempt)


class ProtocolError(WireError):
    """A message of a known kind whose fields do not fit: names the kind and the field."""

    def __init__(self, kind: str, field: str, problem: str) -> None:
        super().__init__(f"{kind!r} message: {field} {problem}")
        self.kind, self.field = kind, field


# ----------------------------------------------------------------------------- field checks
_MISSING: Any = object()


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Reader:
    """Reads one head's fields for one kind; every problem is a ProtocolError.

    `within` names the object being read when it sits inside a field (`stats.`)."""

    def __init__(self, kind: str, head: Any, within: str = "") -> None:
        if not isinstance(head, Mapping):
            where = within.rstrip(".") or "head"
            raise ProtocolError(kind, where, f"must be an object, got {_show(head)}")
        self.kind, self.head, self.within = kind, head, within

    def get(self, name: str, check: Callable[[Any], Any], what: str, default: Any = _MISSING):
        """The field `name` as `check` returns it (check returns None: it is not `what`)."""
        if name not in self.head:
            if default is _MISSING:
                raise ProtocolError(self.kind, self.within + name, "is missing")
            return default
        value = self.head[name]
        out = check(value)
        if out is None:
            raise ProtocolError(
                self.kind, self.within + name, f"must be {what}, got {_show(value)}"
            )
        return out

    def integer(self, name: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
        what = "an integer" if minimum is None else f"an integer >= {minimum}"
        return self.get(name, lambda v: _integer(v, minimum), what, default)

    def number(self, name: str, default: Any = _MISSING, minimum: float | None = None) -> Any:
        what = "a finite number" if minimum is None else f"a finite number >= {minimum:g}"
        return self.get(name, lambda v: _number(v, minimum), what, default)

    def flag(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, lambda v: v if type(v) is bool else None, "true or false", default)

    def text(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, _text, "a string", default)

    def optional_text(self, name: str) -> str | None:
        """A string or null (absent: null)."""
        return self.get(name, lambda v: (v,) if v is None else _one(_text(v)), "a string or null",
                        (None,))[0]  # fmt: skip

    def key(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, _key, "[step, sample, attempt] (integers >= 0)", default)

    def optional_key(self, name: str) -> Key | None:
        """A key or null (absent: null)."""
        return self.get(name, lambda v: (v,) if v is None else _one(_key(v)), "a key or null",
                        (None,))[0]  # fmt: skip

    def keys(self, name: str, default: Any = _MISSING) -> Any:
        what = "a list of [step, sample, attempt]"
        return self.get(name, lambda v: _each(v, _key), what, default)

    def names(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, lambda v: _each(v, _text), "a list of strings", default)

    def addresses(self, name: str, default: Any = _MISSING) -> Any:
        """{name: tcp://HOST:PORT}, as a tuple of pairs (frozen)."""
        return self.get(name, _addresses, "an object of name: tcp://HOST:PORT", default)

    def table(self, name: str, check: Callable[[Any], Any], what: str) -> dict[str, Any]:
        """{string: value} with every value passing `check` (absent: empty)."""

        def each(v: Any) -> dict | None:
            if not isinstance(v, dict):
                return None
            out = {k: check(x) for k, x in v.items()}
            return None if any(x is None for x in out.values()) else out

        return self.get(name, each, f"an object of {what}", {})

    def obj(self, name: str, default: Any = _MISSING) -> Any:
        return self.get(name, lambda v: v if isinstance(v, dict) else None, "an object", default)


def _integer(v: Any, minimum: int | None = None) -> int | None:
    return v if type(v) is int and (minimum is None or v >= minimum) else None


def _number(v: Any, minimum: float | None = None) -> float | None:
    if type(v) not in (int, float) or not math.isfinite(v):
        return None
    return float(v) if minimum is None or v >= minimum else None


def _text(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _one(v: Any) -> tuple | None:
    return None if v is None else (v,)


def _key(v: Any) -> Key | None:
    if isinstance(v, list) and len(v) == 3 and all(type(x) is int and x >= 0 for x in v):
        return (v[0], v[1], v[2])
    return None


def _count_pair(v: Any) -> tuple[int, int] | None:
    """[step, count], both integers >= 0."""
    if isinstance(v, list) and len(v) == 2 and all(type(x) is int and x >= 0 for x in v):
        return (v[0], v[1])
    return None


def _each(v: Any, check: Callable[[Any], Any]) -> tuple | None:
    if not isinstance(v, list):
        return None
    out = tuple(check(x) for x in v)
    return None if any(x is None for x in out) else out


def _address(v: Any) -> str | None:
    try:
        return check_address(v)
    except ValueError:
        return None


def _public_key(v: Any) -> str | None:
    """A CurveZMQ public key as Z85 text (40 characters)."""
    return v if isinstance(v, str) and len(v) == 40 and v.isascii() else None


def _addresses(v: Any) -> tuple[tuple[str, str], ...] | None:
    if not isinstance(v, dict):
        return None
    out = tuple((name, _address(addr)) for name, addr in v.items())
    return None if any(addr is None for _, addr in out) else out


def _parts(kind: str, parts: Sequence[bytes], counts: tuple[int, ...]) -> tuple[bytes, ...]:
    if len(parts) not in counts:
        want = " or ".join(str(c) for c in counts)
        raise ProtocolError(kind, "parts", f"must number {want}, got {len(parts)}")
    return tuple(parts)


def _no_parts(kind: str, parts: Sequence[bytes]) -> None:
    _parts(kind, parts, (0,))


def _list_key(key: Key | None) -> list[int] | None:
    return None if key is None else list(key)


# ----------------------------------------------------------------------------- messages
@dataclass(frozen=True)
class WorkerStats:
    """A worker's cumulative counters, reported with every step and at the end."""

    bytes: Mapping[str, int] = field(default_factory=dict)  # role -> bytes sent
    raw: Mapping[str, int] = field(default_factory=dict)  # role -> bytes at the wire dtype
    messages: Mapping[str, int] = field(default_factory=dict)  # role -> messages sent
    time: Mapping[str, float] = field(default_factory=dict)  # compute, encode, ... -> seconds
    samples_applied: int = 0
    chosen: Mapping[str, str] = field(default_factory=dict)  # role -> codec spec in use
    bad_inputs: int = 0
    dropped_work: int = 0  # work refused because the worker held its bound already

    def to_json(self) -> dict[str, Any]:
        out = {
            "bytes": dict(self.bytes),
            "raw": dict(self.raw),
            "messages": dict(self.messages),
            "time": dict(self.time),
            "samples_applied": self.samples_applied,
            "chosen": dict(self.chosen),
            "bad_inputs": self.bad_inputs,
        }
        if self.dropped_work:  # newer than the rest: absent while 0, as earlier versions wrote
            out["dropped_work"] = self.dropped_work
        return out

    @classmethod
    def parse(cls, kind: str, value: Any) -> WorkerStats:
        """The stats object inside a `kind` message; ProtocolError naming the bad entry."""
        r = _Reader(kind, value, within="stats.")
        count, seconds = (lambda v: _integer(v, 0)), (lambda v: _number(v, 0.0))
        return cls(
            bytes=r.table("bytes", count, "byte counts"),
            raw=r.table("raw", count, "byte counts"),
            messages=r.table("messages", count, "message counts"),
            time=r.table("time", seconds, "seconds"),
            samples_applied=r.integer("samples_applied", 0, minimum=0),
            chosen=r.table("chosen", _text, "codec specs"),
            bad_inputs=r.integer("bad_inputs", 0, minimum=0),
            dropped_work=r.integer("dropped_work", 0, minimum=0),
        )


class _Kind:
    """What every message class has: its kind on the wire, parse() and envelope()."""

    KIND: ClassVar[str]

    @classmethod
    def parse(cls, head: Mapping[str, Any], parts: Sequence[bytes] = ()) -> Self:
        raise NotImplementedError

    def head(self) -> dict[str, Any]:
        return {}

    def parts(self) -> list[bytes]:
        return []

    def envelope(self) -> Message:
        """The message as it goes on the wire."""
        return Message(self.KIND, self.head(), self.parts())


@dataclass(frozen=True)
class Hello(_Kind):
    """A worker's first word: the stage it serves and where peers reach it."""

    KIND = "hello"
    stage: int
    address: str
    pid: int | None = None

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)

        return cls(
            r.integer("stage"), r.get("address", _address, "tcp://HOST:PORT"),
            r.integer("pid", None),
        )  # fmt: skip

    def head(self):
        return {"stage": self.stage, "address": self.address, "pid": self.pid}


@dataclass(frozen=True)
class Init(_Kind):
    """The orchestrator's answer to hello: the run's config and where everyone is."""

    KIND = "init"
    config: Mapping[str, Any]
    vocab: int
    directory: tuple[tuple[str, str], ...]
    step: int
    catch_up_from: str | None = None
    keys: tuple[tuple[str, str], ...] = ()  # name -> CurveZMQ public key (authenticated runs)

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(
            r.obj("config"), r.integer("vocab", minimum=1), r.addresses("directory"),
            r.integer("step", minimum=0), r.optional_text("catch_up_from"),
            tuple(r.table("keys", _public_key, "Z85 public keys").items()),
        )  # fmt: skip

    def head(self):
        h = {
            "config": dict(self.config),
            "vocab": self.vocab,
            "directory": dict(self.directory),
            "step": self.step,
            "catch_up_from": self.catch_up_from,
        }
        if self.keys:
            h["keys"] = dict(self.keys)
        return h


@dataclass(frozen=True)
class Reject(_Kind):
    KIND = "reject"
    reason: str

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).text("reason"))

    def head(self):
        return {"reason": self.reason}


@dataclass(frozen=True)
class Heartbeat(_Kind):
    """`hb`: the orchestrator's sends no fields; a worker's says how it is doing."""

    KIND = "hb"
    progress_age: float | None = None  # seconds since the worker last made progress
    queued: int | None = None  # work it could do now
    bad: int | None = None  # messages its transport could not read

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(
            r.number("progress_age", None, minimum=0.0), r.integer("queued", None, minimum=0),
            r.integer("bad", None, minimum=0),
        )  # fmt: skip

    def head(self):
        h = {"progress_age": self.progress_age, "queued": self.queued, "bad": self.bad}
        return {k: v for k, v in h.items() if v is not None}


@dataclass(frozen=True)
class Ready(_Kind):
    """A worker is set up; its state is that of the start of `step`."""

    KIND = "ready"
    step: int

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).integer("step", minimum=0))

    def head(self):
        return {"step": self.step}


@dataclass(frozen=True)
class PassEvent(_Kind):
    """`ev`: how long one pass (decode, compute, encode) held a worker."""

    KIND = "ev"
    key: Key
    direction: int  # 0 forward, 1 backward
    seconds: float

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        direction = r.get("dir", lambda v: v if type(v) is int and v in (0, 1) else None, "0 or 1")
        return cls(r.key("key"), direction, r.number("dur", minimum=0.0))

    def head(self):
        return {"key": list(self.key), "dir": self.direction, "dur": self.seconds}


@dataclass(frozen=True)
class Loss(_Kind):
    KIND = "loss"
    key: Key
    loss: float
    eval: bool = False

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(r.key("key"), r.number("loss"), r.flag("eval", False))

    def head(self):
        return {"key": list(self.key), "loss": self.loss, "eval": self.eval}


@dataclass(frozen=True)
class Done(_Kind):
    """The first stage finished a sample's backward pass: the sample can be committed."""

    KIND = "done"
    key: Key

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).key("key"))

    def head(self):
        return {"key": list(self.key)}


@dataclass(frozen=True)
class Failed(_Kind):
    """A sample a worker could not process (an input that did not decode or fit)."""

    KIND = "failed"
    key: Key | None
    reason: str
    frm: str

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(r.optional_key("key"), r.text("reason", ""), r.text("frm", ""))

    def head(self):
        return {"key": _list_key(self.key), "reason": self.reason, "frm": self.frm}


@dataclass(frozen=True)
class Stepped(_Kind):
    """A worker applied step `step`: how many of the committed samples it had."""

    KIND = "stepped"
    step: int
    applied: int
    missing: int
    stats: WorkerStats

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(
            r.integer("step", minimum=0), r.integer("applied", 0, minimum=0),
            r.integer("missing", 0, minimum=0), WorkerStats.parse(cls.KIND, r.obj("stats")),
        )  # fmt: skip

    def head(self):
        return {
            "step": self.step,
            "applied": self.applied,
            "missing": self.missing,
            "stats": self.stats.to_json(),
        }


@dataclass(frozen=True)
class Merged(_Kind):
    KIND = "merged"
    step: int
    replicas: int

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(r.integer("step", minimum=0), r.integer("replicas", minimum=1))

    def head(self):
        return {"step": self.step, "replicas": self.replicas}


@dataclass(frozen=True)
class Bye(_Kind):
    """A worker stops (after `stop`): its final counters."""

    KIND = "bye"
    stats: WorkerStats
    step: int

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(WorkerStats.parse(cls.KIND, r.obj("stats")), r.integer("step", minimum=0))

    def head(self):
        return {"stats": self.stats.to_json(), "step": self.step}


@dataclass(frozen=True)
class Crash(_Kind):
    KIND = "crash"
    reason: str

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).text("reason", ""))

    def head(self):
        return {"reason": self.reason}


@dataclass(frozen=True)
class Step(_Kind):
    """Apply step `step` with the committed attempts; maybe send state, maybe merge."""

    KIND = "step"
    step: int
    commit: tuple[Key, ...] = ()
    send_state: tuple[str, ...] = ()  # newcomers to send weights and optimizer state to
    merge_peers: tuple[str, ...] | None = None  # the replicas of a DiLoCo merge, if one

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        merge = r.obj("merge", None)
        peers = None
        if merge is not None:
            peers = _Reader(cls.KIND, merge, within="merge.").names("peers")
        return cls(
            r.integer("step", minimum=0), r.keys("commit", ()), r.names("send_state", ()), peers
        )

    def head(self):
        h: dict[str, Any] = {
            "step": self.step,
            "commit": [list(k) for k in self.commit],
            "send_state": list(self.send_state),
        }
        if self.merge_peers is not None:
            h["merge"] = {"peers": list(self.merge_peers)}
        return h


@dataclass(frozen=True)
class Drop(_Kind):
    """Forget these attempts (abandoned: replayed elsewhere)."""

    KIND = "drop"
    keys: tuple[Key, ...]

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).keys("keys", ()))

    def head(self):
        return {"keys": [list(k) for k in self.keys]}


@dataclass(frozen=True)
class Directory(_Kind):
    """`dir`: peers that joined (name -> address) or left."""

    KIND = "dir"
    add: tuple[tuple[str, str], ...] = ()
    remove: tuple[str, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()  # public keys of the peers added (authenticated runs)

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        keys = tuple(r.table("keys", _public_key, "Z85 public keys").items())
        return cls(r.addresses("add", ()), r.names("remove", ()), keys)

    def head(self):
        h: dict[str, Any] = {}
        if self.add:
            h["add"] = dict(self.add)
        if self.remove:
            h["remove"] = list(self.remove)
        if self.keys:
            h["keys"] = dict(self.keys)
        return h


@dataclass(frozen=True)
class Resync(_Kind):
    """The state a newcomer took is too old (a merge passed): another is on the way."""

    KIND = "resync"

    @classmethod
    def parse(cls, head, parts=()):
        _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls()


@dataclass(frozen=True)
class Resume(_Kind):
    """The state a newcomer holds is current enough: serve from `step`."""

    KIND = "resume"
    step: int

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).integer("step", minimum=0))

    def head(self):
        return {"step": self.step}


@dataclass(frozen=True)
class Rejoin(_Kind):
    """A new orchestrator (a restart or a standby, under `epoch`) runs this run now: say
    where you stand (and send to `address` from now on: a standby may listen elsewhere)."""

    KIND = "rejoin"
    epoch: int
    address: str | None = None  # where it listens, if not where its predecessor did

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        r = _Reader(cls.KIND, head)
        address = r.get("address", lambda v: (v,) if v is None else _one(_address(v)),
                        "tcp://HOST:PORT or null", (None,))[0]  # fmt: skip
        return cls(r.integer("epoch", minimum=1), address)

    def head(self):
        return {"epoch": self.epoch, "address": self.address}


@dataclass(frozen=True)
class Standing(_Kind):
    """A worker's answer to rejoin: its step, whether it holds a live replica's state, the
    samples it applied in its last steps ([step, samples] pairs) and its counters."""

    KIND = "standing"
    step: int
    caught_up: bool
    applied: tuple[tuple[int, int], ...]
    stats: WorkerStats

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls(
            r.integer("step", minimum=0), r.flag("caught_up"),
            r.get("applied", lambda v: _each(v, _count_pair), "a list of [step, samples]"),
            WorkerStats.parse(cls.KIND, r.obj("stats")),
        )  # fmt: skip

    def head(self):
        return {
            "step": self.step,
            "caught_up": self.caught_up,
            "applied": [list(p) for p in self.applied],
            "stats": self.stats.to_json(),
        }


@dataclass(frozen=True)
class Stop(_Kind):
    KIND = "stop"

    @classmethod
    def parse(cls, head, parts=()):
        _Reader(cls.KIND, head)
        _no_parts(cls.KIND, parts)
        return cls()


@dataclass(frozen=True)
class Forward(_Kind):
    """`fwd`: a sample's token block, and from the second stage on the activation."""

    KIND = "fwd"
    key: Key
    path: tuple[str, ...]  # the worker of each stage
    eval: bool
    tokens: bytes
    activation: bytes | None = None

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        got = _parts(cls.KIND, parts, (1, 2))
        path = r.names("path")
        return cls(r.key("key"), path, r.flag("eval", False), got[0], (*got, None)[1])

    def head(self):
        return {"key": list(self.key), "path": list(self.path), "eval": self.eval}

    def parts(self):
        return [self.tokens] if self.activation is None else [self.tokens, self.activation]


@dataclass(frozen=True)
class Backward(_Kind):
    """`bwd`: the gradient of a stage's output, sent to the stage before."""

    KIND = "bwd"
    key: Key
    path: tuple[str, ...]
    gradient: bytes

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        (gradient,) = _parts(cls.KIND, parts, (1,))
        return cls(r.key("key"), r.names("path"), gradient)

    def head(self):
        return {"key": list(self.key), "path": list(self.path)}

    def parts(self):
        return [self.gradient]


@dataclass(frozen=True)
class Delta(_Kind):
    """A replica's pseudo-gradient for the merge ending step `round`."""

    KIND = "delta"
    round: int
    blob: bytes

    @classmethod
    def parse(cls, head, parts=()):
        (blob,) = _parts(cls.KIND, parts, (1,))
        return cls(_Reader(cls.KIND, head).integer("round", minimum=0), blob)

    def head(self):
        return {"round": self.round}

    def parts(self):
        return [self.blob]


STATE_PARTS = ("weights", "anchor", "momentum", "exp_avg", "exp_avg_sq")


@dataclass(frozen=True)
class State(_Kind):
    """A live replica's weights, DiLoCo anchor and momentum and Adam moments, for `step`."""

    KIND = "state"
    step: int
    adam_step: float
    tensors: tuple[bytes, ...]  # one frame per STATE_PARTS entry

    @classmethod
    def parse(cls, head, parts=()):
        r = _Reader(cls.KIND, head)
        tensors = _parts(cls.KIND, parts, (len(STATE_PARTS),))
        return cls(r.integer("step", minimum=0), r.number("adam_step", 0.0, minimum=0.0), tensors)

    def head(self):
        return {"step": self.step, "adam_step": self.adam_step}

    def parts(self):
        return list(self.tensors)


@dataclass(frozen=True)
class Unreadable(_Kind):
    """`_bad`: what the transport hands on for a message that did not parse at all."""

    KIND = "_bad"
    reason: str

    @classmethod
    def parse(cls, head, parts=()):
        return cls(_Reader(cls.KIND, head).text("reason", ""))

    def head(self):
        return {"reason": self.reason}


@dataclass(frozen=True)
class Ping(_Kind):
    """Calibration's loopback probe (`ping` with a payload part, answered by `pong`)."""

    KIND = "ping"
    i: int
    payload: bytes = b""

    @classmethod
    def parse(cls, head, parts=()):
        got = _parts(cls.KIND, parts, (0, 1))
        return cls(_Reader(cls.KIND, head).integer("i"), (*got, b"")[0])

    def head(self):
        return {"i": self.i}

    def parts(self):
        return [self.payload]


@dataclass(frozen=True)
class Pong(_Kind):
    KIND = "pong"
    i: int

    @classmethod
    def parse(cls, head, parts=()):
        _no_parts(cls.KIND, parts)
        return cls(_Reader(cls.KIND, head).integer("i"))

    def head(self):
        return {"i": self.i}


@dataclass(frozen=True)
class Unknown:
    """A kind this version does not know (a newer peer's): read, and ignored by handlers."""

    kind: str


KINDS: dict[str, type[_Kind]] = {
    cls.KIND: cls
    for cls in (
        Hello, Init, Reject, Heartbeat, Ready, PassEvent, Loss, Done, Failed, Stepped,
        Merged, Bye, Crash, Step, Drop, Directory, Resync, Resume, Stop, Forward, Backward,
        Delta, State, Unreadable, Ping, Pong, Rejoin, Standing,
    )
}  # fmt: skip
# What only the orchestrator may send a worker (anyone else's is dropped).
FROM_ORCHESTRATOR = (Init, Reject, Step, Drop, Directory, Resync, Resume, Stop, Rejoin)


def read(msg: Message) -> Any:
    """The typed message in an envelope; Unknown for a kind this version does not know;
    ProtocolError naming the kind and field for a known kind whose fields do not fit."""
    cls = KINDS.get(msg.kind)
    if cls is None:
        return Unknown(msg.kind)
    return cls.parse(msg.head, msg.parts)


__all__ = [
    "FROM_ORCHESTRATOR",
    "KINDS",
    "STATE_PARTS",
    "Backward",
    "Bye",
    "Crash",
    "Delta",
    "Directory",
    "Done",
    "Drop",
    "Failed",
    "Forward",
    "Heartbeat",
    "Hello",
    "Init",
    "Key",
    "Loss",
    "Merged",
    "PassEvent",
    "Ping",
    "Pong",
    "ProtocolError",
    "Ready",
    "Reject",
    "Rejoin",
    "Resume",
    "Resync",
    "Standing",
    "State",
    "Step",
    "Stepped",
    "Stop",
    "Unknown",
    "Unreadable",
    "WorkerStats",
    "read",
]
