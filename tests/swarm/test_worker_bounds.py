"""A worker holds a bounded amount of work whoever sends it: work only from peers the
orchestrator named, at most a step's worth (a few times over) per sender, merge deltas
from at most a stage's replicas per round, no step messages far ahead; what passes a
bound is refused and counted."""

from __future__ import annotations

import pytest

from swarmpress.swarm.config import build_config
from swarmpress.swarm.protocol import Delta, Forward, Init, Step
from swarmpress.swarm.worker import StageWorker, connect

SMALL = {"layers": 2, "dim": 32, "heads": 4, "ffn": 64, "seq_len": 16, "microbatch": 2}


@pytest.fixture
def worker():
    cfg = build_config("tiny", **SMALL)
    ep, pulse = connect("s1r0", "tcp://127.0.0.1:9")
    peers = (("s0r0", "tcp://127.0.0.1:10"), ("s1r1", "tcp://127.0.0.1:11"))
    w = StageWorker(ep, pulse, 1, Init(cfg.model_dump(), 50, peers, 0))
    yield w
    ep.close()


def _fwd(step: int, sample: int, attempt: int) -> Forward:
    return Forward((step, sample, attempt), ("s0r0", "s1r0"), False, b"t", b"a")


def test_work_from_a_peer_is_bounded_and_the_rest_counted(worker):
    n = worker.max_work + 50
    for i in range(n):
        worker._dispatch("s0r0", _fwd(1, i % worker.cfg.microbatches, i).envelope())
    assert len(worker.fwd) == worker.max_work
    assert worker.stats.dropped_work == 50
    # another peer's share is its own: the flood did not crowd it out
    worker._dispatch("s1r1", _fwd(0, 0, 0).envelope())
    assert len(worker.fwd) == worker.max_work + 1


def test_work_is_bounded_in_bytes_too(worker):
    """Few but huge messages: the sender's share is bounded in bytes as well."""
    big = bytes(worker.max_work_bytes // 3)
    for i in range(5):
        m = Forward((0, 0, i), ("s0r0", "s1r0"), False, b"t", big)
        worker._dispatch("s0r0", m.envelope())
    assert len(worker.fwd) == 2 and worker.stats.dropped_work == 3
    # work beyond the next step is not held at all
    worker._dispatch("s0r0", _fwd(3, 0, 0).envelope())
    assert worker.stats.bad_inputs == 1


def test_work_from_strangers_is_refused(worker):
    for sender in ("rogue", "s9r9", ""):
        worker._dispatch(sender, _fwd(0, 0, 0).envelope())
    assert worker.fwd == [] and worker.stats.bad_inputs == 3


def test_deltas_are_bounded_per_round(worker):
    blob = b"x"
    worker._dispatch("rogue", Delta(0, blob).envelope())
    assert worker.stats.bad_inputs == 1 and worker.deltas == {}
    limit = 2 * worker.cfg.replicas + 2
    worker.deltas[0].update({f"n{i}": None for i in range(limit)})  # a full round
    worker._dispatch("s1r1", Delta(0, blob).envelope())
    assert worker.stats.dropped_work == 1 and "s1r1" not in worker.deltas[0]


def test_far_future_steps_are_not_hoarded(worker):
    worker._dispatch("orch", Step(50, (), (), None).envelope())
    assert worker.future_steps == {} and worker.stats.bad_inputs == 1
    worker._dispatch("orch", Step(2, (), (), None).envelope())
    assert list(worker.future_steps) == [2]


def test_a_step_sent_again_mid_merge_is_ignored(worker):
    """A successor orchestrator sends the last decided step again; a replica still merging
    that step must not apply it twice nor start a second merge."""
    step = Step(0, (), (), ("s1r0", "s1r1"))
    worker._dispatch("orch", step.envelope())
    assert worker.merge_wait is not None and worker.stats.messages["weight-delta"] == 1
    wait = worker.merge_wait
    worker._dispatch("orch", step.envelope())
    assert worker.merge_wait is wait and worker.stats.messages["weight-delta"] == 1
    assert worker.applied_log == {0: 0}
