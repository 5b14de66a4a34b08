"""The swarm protocol: one typed message per kind, the same bytes on the wire as before,
and one error (naming kind and field) for every head that does not fit."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from swarmpress.errors import SwarmpressError
from swarmpress.swarm import protocol as p
from swarmpress.swarm.framing import Message, WireError, parse

STATS = p.WorkerStats(
    bytes={"activation": 10}, raw={"activation": 40}, messages={"activation": 1},
    time={"compute": 0.5}, samples_applied=2, chosen={"activation": "lossy"}, bad_inputs=1,
)  # fmt: skip
STATS_JSON = (
    '{"bytes":{"activation":10},"raw":{"activation":40},"messages":{"activation":1},'
    '"time":{"compute":0.5},"samples_applied":2,"chosen":{"activation":"lossy"},"bad_inputs":1}'
)

# Each message as this protocol writes it, and the header bytes the untyped dict heads of
# earlier versions wrote for it (field order included): the wire format must not drift.
GOLDEN = [
    (p.Hello(1, "tcp://127.0.0.1:5555", 42),
     '{"stage":1,"address":"tcp://127.0.0.1:5555","pid":42,"kind":"hello"}'),
    (p.Init({"dim": 64}, 100, (("s0r0", "tcp://h:1"),), 3, None),
     '{"config":{"dim":64},"vocab":100,"directory":{"s0r0":"tcp://h:1"},"step":3,'
     '"catch_up_from":null,"kind":"init"}'),
    (p.Init({}, 5, (), 0, "s0r1"),
     '{"config":{},"vocab":5,"directory":{},"step":0,"catch_up_from":"s0r1","kind":"init"}'),
    (p.Reject("no"), '{"reason":"no","kind":"reject"}'),
    (p.Heartbeat(), '{"kind":"hb"}'),
    (p.Heartbeat(0.25, 2, 0), '{"progress_age":0.25,"queued":2,"bad":0,"kind":"hb"}'),
    (p.Ready(4), '{"step":4,"kind":"ready"}'),
    (p.PassEvent((1, 2, 0), 1, 0.125), '{"key":[1,2,0],"dir":1,"dur":0.125,"kind":"ev"}'),
    (p.Loss((1, 2, 0), 3.5, True), '{"key":[1,2,0],"loss":3.5,"eval":true,"kind":"loss"}'),
    (p.Done((1, 2, 0)), '{"key":[1,2,0],"kind":"done"}'),
    (p.Failed((1, 2, 0), "bad frame", "s0r0"),
     '{"key":[1,2,0],"reason":"bad frame","frm":"s0r0","kind":"failed"}'),
    (p.Stepped(3, 4, 0, STATS),
     '{"step":3,"applied":4,"missing":0,"stats":' + STATS_JSON + ',"kind":"stepped"}'),
    (p.Merged(9, 2), '{"step":9,"replicas":2,"kind":"merged"}'),
    (p.Bye(STATS, 5), '{"stats":' + STATS_JSON + ',"step":5,"kind":"bye"}'),
    (p.Crash("Traceback"), '{"reason":"Traceback","kind":"crash"}'),
    (p.Step(3, ((3, 0, 0), (3, 1, 1)), (), None),
     '{"step":3,"commit":[[3,0,0],[3,1,1]],"send_state":[],"kind":"step"}'),
    (p.Step(9, (), ("s1g2",), ("s1r0", "s1r1")),
     '{"step":9,"commit":[],"send_state":["s1g2"],"merge":{"peers":["s1r0","s1r1"]},'
     '"kind":"step"}'),
    (p.Drop(((1, 2, 0),)), '{"keys":[[1,2,0]],"kind":"drop"}'),
    (p.Directory(add=(("s0g1", "tcp://h:2"),)), '{"add":{"s0g1":"tcp://h:2"},"kind":"dir"}'),
    (p.Directory(remove=("s0r0",)), '{"remove":["s0r0"],"kind":"dir"}'),
    (p.Resync(), '{"kind":"resync"}'),
    (p.Resume(7), '{"step":7,"kind":"resume"}'),
    (p.Stop(), '{"kind":"stop"}'),
    (p.Forward((0, 1, 0), ("s0r0", "s1r0"), False, b"tok"),
     '{"key":[0,1,0],"path":["s0r0","s1r0"],"eval":false,"kind":"fwd"}'),
    (p.Forward((0, 1, 0), ("s0r0", "s1r0"), True, b"tok", b"act"),
     '{"key":[0,1,0],"path":["s0r0","s1r0"],"eval":true,"kind":"fwd"}'),
    (p.Backward((0, 1, 0), ("s0r0", "s1r0"), b"grad"),
     '{"key":[0,1,0],"path":["s0r0","s1r0"],"kind":"bwd"}'),
    (p.Delta(9, b"delta"), '{"round":9,"kind":"delta"}'),
    (p.State(10, 10.0, (b"a", b"b", b"c", b"d", b"e")),
     '{"step":10,"adam_step":10.0,"kind":"state"}'),
    (p.Unreadable("bad magic"), '{"reason":"bad magic","kind":"_bad"}'),
    (p.Ping(3, b"x" * 8), '{"i":3,"kind":"ping"}'),
    (p.Pong(3), '{"i":3,"kind":"pong"}'),
    (p.Rejoin(2), '{"epoch":2,"address":null,"kind":"rejoin"}'),
    (p.Rejoin(3, "tcp://h:9"), '{"epoch":3,"address":"tcp://h:9","kind":"rejoin"}'),
    (p.Standing(7, True, ((5, 2), (6, 2)), STATS),
     '{"step":7,"caught_up":true,"applied":[[5,2],[6,2]],"stats":' + STATS_JSON
     + ',"kind":"standing"}'),
    (p.Stepped(3, 4, 0, dataclasses.replace(STATS, dropped_work=5)),
     '{"step":3,"applied":4,"missing":0,"stats":' + STATS_JSON[:-1] + ',"dropped_work":5}'
     ',"kind":"stepped"}'),
]  # fmt: skip


def test_every_kind_has_a_golden_case():
    assert {type(m).KIND for m, _ in GOLDEN} == set(p.KINDS)


@pytest.mark.parametrize(("msg", "head"), GOLDEN, ids=[type(m).KIND for m, _ in GOLDEN])
def test_wire_bytes_are_those_of_the_untyped_heads(msg, head):
    frames = msg.envelope().encode()
    assert frames[1] == head.encode()
    assert frames[2:] == msg.parts()


@pytest.mark.parametrize(("msg", "head"), GOLDEN, ids=[type(m).KIND for m, _ in GOLDEN])
def test_read_gives_back_the_same_message(msg, head):
    assert dataclasses.is_dataclass(msg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        msg.x = 1  # frozen
    back = p.read(parse(msg.envelope().encode()))
    assert back == msg
    assert type(back) is type(msg)


def test_an_unknown_kind_reads_as_unknown():
    assert p.read(Message("from-the-future", {"x": 1})) == p.Unknown("from-the-future")


def test_protocol_error_is_a_wire_error_and_a_swarmpress_error():
    assert issubclass(p.ProtocolError, WireError)
    assert issubclass(p.ProtocolError, SwarmpressError)
    assert issubclass(WireError, SwarmpressError)


@pytest.mark.parametrize(
    ("kind", "head", "parts", "field", "detail"),
    [
        ("hello", {"stage": 0, "address": "foo"}, [], "address", "tcp://HOST:PORT"),
        ("hello", {"stage": 0, "address": None}, [], "address", "None"),
        ("hello", {"address": "tcp://h:1"}, [], "stage", "missing"),
        ("hello", {"stage": True, "address": "tcp://h:1"}, [], "stage", "integer"),
        ("init", {"config": [], "vocab": 2, "directory": {}, "step": 0}, [], "config", "object"),
        ("init", {"config": {}, "vocab": 2, "directory": {"a": "x"}, "step": 0}, [],
         "directory", "tcp"),
        ("ev", {"key": "ab", "dur": 0.1, "dir": 0}, [], "key", "[step, sample, attempt]"),
        ("ev", {"key": [0, 0, 0], "dur": 0.1, "dir": 2}, [], "dir", "0 or 1"),
        ("ev", {"key": [0, 0, 0], "dur": -1.0, "dir": 0}, [], "dur", ">= 0"),
        ("done", {"key": [0, [1], 0]}, [], "key", "[step, sample, attempt]"),
        ("done", {"key": [0, -1, 0]}, [], "key", "integers >= 0"),
        ("loss", {"key": 5, "loss": 1.0}, [], "key", "5"),
        ("loss", {"key": [0, 0, 0], "loss": "x"}, [], "loss", "number"),
        ("loss", {"key": [0, 0, 0], "loss": float("nan")}, [], "loss", "finite"),
        ("failed", {"key": {"a": 1}}, [], "key", "key or null"),
        ("stepped", {}, [], "step", "missing"),
        ("rejoin", {"epoch": 0}, [], "epoch", ">= 1"),
        ("rejoin", {"epoch": 2, "address": "h:1"}, [], "address", "tcp://HOST:PORT"),
        ("standing", {"step": 1, "caught_up": 1, "applied": [], "stats": {}}, [], "caught_up",
         "true or false"),
        ("standing", {"step": 1, "caught_up": True, "applied": [[1, -2]], "stats": {}}, [],
         "applied", "[step, samples]"),
        ("standing", {"step": 1, "caught_up": True, "applied": [[1, 2, 3]], "stats": {}}, [],
         "applied", "[step, samples]"),
        ("stepped", {"step": "3", "stats": {}}, [], "step", "integer"),
        ("stepped", {"step": 3}, [], "stats", "missing"),
        ("stepped", {"step": 3, "stats": {"bytes": {"a": -1}}}, [], "stats.bytes", "counts"),
        ("stepped", {"step": 3, "stats": {"time": {"a": "x"}}}, [], "stats.time", "seconds"),
        ("bye", {"stats": [1, 2], "step": 0}, [], "stats", "object"),
        ("hb", {"progress_age": "x"}, [], "progress_age", "number"),
        ("ready", {"step": [1]}, [], "step", "integer"),
        ("step", {"step": 1, "commit": [[1, 2]]}, [], "commit", "[step, sample, attempt]"),
        ("step", {"step": 1, "merge": {"peers": [1]}}, [], "merge.peers", "strings"),
        ("step", {"step": 1, "merge": []}, [], "merge", "object"),
        ("dir", {"add": {"x": 1}}, [], "add", "tcp"),
        ("dir", {"remove": "s0r0"}, [], "remove", "list"),
        ("drop", {"keys": [None]}, [], "keys", "list"),
        ("resume", {}, [], "step", "missing"),
        ("fwd", {"key": [0, 0, 0], "path": ["a"]}, [], "parts", "1 or 2"),
        ("fwd", {"key": [0, 0, 0], "path": "ab"}, [b"t"], "path", "list of strings"),
        ("fwd", {"key": [0, 0, 0], "path": ["a"], "eval": 1}, [b"t"], "eval", "true or false"),
        ("bwd", {"key": [0, 0, 0], "path": ["a"]}, [b"g", b"g"], "parts", "1, got 2"),
        ("delta", {"round": "1"}, [b"d"], "round", "integer"),
        ("state", {"step": 1}, [b"x"] * 4, "parts", "5, got 4"),
        ("state", {"step": 1, "adam_step": "many"}, [b"x"] * 5, "adam_step", "number"),
        ("stop", {}, [b"x"], "parts", "0"),
    ],
)  # fmt: skip
def test_a_head_that_does_not_fit_names_kind_and_field(kind, head, parts, field, detail):
    with pytest.raises(p.ProtocolError) as info:
        p.read(Message(kind, head, parts))
    err = info.value
    assert (err.kind, err.field) == (kind, field)
    assert str(err).startswith(f"{kind!r} message: {field} ")
    assert detail in str(err)


def test_a_heads_own_kind_field_is_not_a_field():
    # the envelope's kind wins (framing.parse pops it); a message's head never has one
    assert p.read(parse(Message("ready", {"kind": "x", "step": 1}).encode())) == p.Ready(1)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                 max_size=4),
    max_leaves=12,
)  # fmt: skip


FIELDS = ["key", "path", "step", "stats", "merge", "add", "stage", "address", "dur", "dir",
          "loss", "eval", "round", "commit", "keys", "reason"]  # fmt: skip


@given(
    kind=st.sampled_from(sorted(p.KINDS)),
    head=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6),
    nparts=st.integers(0, 6),
)
def test_any_head_reads_or_raises_protocol_error_only(kind, head, nparts):
    frames = Message(kind, head, [b"x"] * nparts).encode()
    msg = parse(frames)
    try:
        m = p.read(msg)
    except p.ProtocolError as exc:
        assert exc.kind == kind
        return
    assert kind == type(m).KIND
    # what reads also writes: the typed message goes back on the wire as JSON
    json.loads(m.envelope().encode()[1])


def test_only_the_orchestrator_steers():
    kinds = {cls.KIND for cls in p.FROM_ORCHESTRATOR}
    assert kinds == {
        "init", "reject", "step", "drop", "dir", "resync", "resume", "stop", "rejoin",
    }  # fmt: skip
