"""CurveZMQ on the swarm transport: only the run's keys get in, and a name is what a key
proves. Real endpoints on loopback; absence is checked after a later message arrives."""

import time

import pytest
import zmq

from swarmpress.errors import AuthError
from swarmpress.swarm.auth import KeyPair, KeyRing, dial_curve
from swarmpress.swarm.framing import Message
from swarmpress.swarm.transport import Endpoint, PeerAuth

TIMEOUT = 10.0


@pytest.fixture
def run_keys():
    keys = {name: KeyPair.generate() for name in ("orch", "w0", "w1")}
    ring = KeyRing.of({name: k.public for name, k in keys.items()})
    return keys, ring


@pytest.fixture
def endpoints(run_keys):
    keys, ring = run_keys
    made: list[Endpoint] = []

    def make(name: str) -> Endpoint:
        ep = Endpoint(name, auth=PeerAuth(keys[name], ring))
        made.append(ep)
        return ep

    yield make
    for ep in made:
        ep.close()


def _raw(address: str, identity: bytes, keys: KeyPair | None = None, server=None):
    ctx = zmq.Context.instance()
    s = ctx.socket(zmq.DEALER)
    s.setsockopt(zmq.IDENTITY, identity)
    s.setsockopt(zmq.LINGER, 0)
    if keys is not None:
        dial_curve(s, keys, server)
    s.connect(address)
    return s


def _wait(cond, what: str) -> None:
    end = time.monotonic() + TIMEOUT
    while not cond():
        assert time.monotonic() < end, what
        time.sleep(0.01)


def test_peers_of_the_run_talk_and_their_names_are_proven(endpoints):
    orch, w0 = endpoints("orch"), endpoints("w0")
    w0.connect("orch", orch.address)
    w0.send("orch", Message("hello", {"stage": 0}))
    got = orch.recv(timeout=TIMEOUT)
    assert got is not None and got[0] == "w0" and got[1].kind == "hello"
    assert orch.forged == orch.refused == 0


def test_strangers_never_reach_the_code(endpoints, run_keys):
    keys, _ = run_keys
    orch, w0 = endpoints("orch"), endpoints("w0")
    # no CURVE at all, claiming a member's name: the handshake fails, nothing arrives
    plain = _raw(orch.address, b"w1")
    plain.send_multipart(Message("stop").encode())
    # a key the run does not hold, claiming a member's name: refused by the authenticator
    stranger = _raw(orch.address, b"w1", KeyPair.generate(), keys["orch"].public)
    stranger.send_multipart(Message("crash").encode())
    _wait(lambda: orch.refused >= 1, "the stranger's key was never refused")
    # a member's own message still arrives, and it is the only one
    w0.connect("orch", orch.address)
    w0.send("orch", Message("ready", {"step": 0}))
    got = orch.recv(timeout=TIMEOUT)
    assert got is not None and (got[0], got[1].kind) == ("w0", "ready")
    assert orch.recv(timeout=0.5) is None
    assert orch.bad_messages == 0
    plain.close(linger=0)
    stranger.close(linger=0)


def test_a_member_claiming_another_name_is_dropped_and_counted(endpoints, run_keys):
    keys, _ = run_keys
    orch = endpoints("orch")
    liar = _raw(orch.address, b"w1", keys["w0"], keys["orch"].public)  # w0's key, says w1
    liar.send_multipart(Message("stepped", {"step": 3}).encode())
    honest = _raw(orch.address, b"w0", keys["w0"], keys["orch"].public)
    honest.send_multipart(Message("ready", {"step": 0}).encode())
    got = orch.recv(timeout=TIMEOUT)
    assert got is not None and (got[0], got[1].kind) == ("w0", "ready")
    _wait(lambda: orch.forged == 1, "the forged name was not counted")
    assert orch.recv(timeout=0.5) is None
    liar.close(linger=0)
    honest.close(linger=0)


def test_a_peer_without_a_key_in_the_ring_is_not_dialled(endpoints):
    orch = endpoints("orch")
    orch.connect("nobody", "tcp://127.0.0.1:9")
    orch.send("nobody", Message("hb"))
    _wait(lambda: orch.dropped_sends == 1, "a send to a keyless peer was not dropped")


def test_key_rings_refuse_bad_keys():
    ring = KeyRing()
    k = KeyPair.generate()
    ring.add("a", k.public)
    with pytest.raises(AuthError, match="already belongs to 'a'"):
        ring.add("b", k.public)
    with pytest.raises(AuthError, match="40 Z85"):
        ring.add("c", b"short")
    assert "secret" not in repr(k) and k.secret.decode() not in repr(k)
