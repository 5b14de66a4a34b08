"""The ZeroMQ transport on loopback: real Endpoints, real sockets, emulated links.

Timing assertions are lower bounds only (a shaped message is never early); upper bounds
are generous, since the test machine may be busy.
"""

import time

import pytest
import torch
import zmq

from swarmpress.codecs import Role
from swarmpress.swarm.framing import MAGIC, VERSION, Message
from swarmpress.swarm.links import LinkSpec
from swarmpress.swarm.role_codecs import RoleCodecs
from swarmpress.swarm.tensors import decode_tensor
from swarmpress.swarm.transport import Endpoint

TIMEOUT = 5.0  # seconds a message may take on a busy loopback


@pytest.fixture
def endpoints():
    made: list[Endpoint] = []

    def make(name: str, **kw) -> Endpoint:
        ep = Endpoint(name, **kw)
        made.append(ep)
        return ep

    yield make
    for ep in made:
        ep.close()


@pytest.fixture
def pair(endpoints):
    a, b = endpoints("a"), endpoints("b")
    a.connect("b", b.address)
    b.connect("a", a.address)
    return a, b


@pytest.fixture
def raw_dealer():
    ctx = zmq.Context()
    socks: list[zmq.Socket] = []

    def make(address: str, identity: bytes) -> zmq.Socket:
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.IDENTITY, identity)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(address)
        socks.append(s)
        return s

    yield make
    for s in socks:
        s.close(linger=0)
    ctx.term()


def _recv(ep: Endpoint, timeout: float = TIMEOUT) -> tuple[str, Message]:
    got = ep.recv(timeout=timeout)
    assert got is not None, f"{ep.name} received nothing within {timeout} s"
    return got


def test_endpoints_bind_distinct_loopback_addresses(endpoints):
    a, b = endpoints("a"), endpoints("b")
    assert a.address.startswith("tcp://127.0.0.1:")
    assert a.address != b.address
    assert a.recv(timeout=0.05) is None


def test_two_endpoints_exchange_messages_both_ways(pair):
    a, b = pair
    receipt = a.send("b", Message("ping", {"i": 1}))
    assert receipt.nbytes == Message("ping", {"i": 1}).nbytes
    sender, msg = _recv(b)
    assert (sender, msg.kind, msg.head) == ("a", "ping", {"i": 1})
    b.send("a", Message("pong", {"i": 1, "ok": True}))
    sender, msg = _recv(a)
    assert (sender, msg.kind, msg.head) == ("b", "pong", {"i": 1, "ok": True})


def test_multipart_tensors_arrive_intact_and_in_order(pair):
    a, b = pair
    codecs = RoleCodecs("none", "lossy", "topk", "lossless:mode=fast")
    acts = [torch.randn(2, 8, 16) for _ in range(3)]
    weights = torch.randn(1000)
    for i, x in enumerate(acts):
        parts = [
            codecs.encode(x, Role.ACTIVATION, torch.float32),
            codecs.encode(weights, Role.WEIGHTS, torch.float32),
            bytes(range(256)),
        ]
        a.send("b", Message("fwd", {"i": i}, parts))
    for i, x in enumerate(acts):
        _, msg = _recv(b)
        assert msg.head == {"i": i}
        assert len(msg.parts) == 3
        assert torch.equal(decode_tensor(msg.parts[0], (2, 8, 16)), x)
        assert torch.equal(decode_tensor(msg.parts[1], (1000,)), weights)
        assert msg.parts[2] == bytes(range(256))
    # and back the other way, with a large part
    big = torch.randn(256, 1024)
    b.send("a", Message("bwd", {}, [codecs.encode(big, Role.ACTIVATION, torch.float32)]))
    _, msg = _recv(a)
    assert torch.equal(decode_tensor(msg.parts[0], (256, 1024)), big)


def test_garbage_is_counted_reported_and_survived(endpoints, raw_dealer):
    ep = endpoints("victim")
    evil = raw_dealer(ep.address, b"evil")
    evil.send_multipart([b"just one frame"])
    evil.send_multipart([b"HTTP", b"GET / HTTP/1.1"])
    evil.send_multipart([MAGIC + bytes([VERSION]), b"\xff not json"])
    evil.send_multipart([MAGIC + bytes([VERSION + 1]), b'{"kind":"x"}'])
    reasons = []
    for _ in range(4):
        sender, msg = _recv(ep)
        assert sender == "evil"
        assert msg.kind == "_bad"
        reasons.append(msg.head["reason"])
    assert ep.bad_messages == 4
    assert "at least 2 parts" in reasons[0]
    assert "not a swarm message" in reasons[1]
    assert "not JSON" in reasons[2]
    assert "same swarmpress version" in reasons[3]
    # still alive: a well-formed message from the same socket, then from a real peer
    evil.send_multipart(Message("hello", {"n": 1}).encode())
    sender, msg = _recv(ep)
    assert (sender, msg.kind, msg.head) == ("evil", "hello", {"n": 1})
    friend = endpoints("friend")
    friend.connect("victim", ep.address)
    friend.send("victim", Message("hi"))
    sender, msg = _recv(ep)
    assert (sender, msg.kind) == ("friend", "hi")
    assert ep.bad_messages == 4


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_deeply_nested_header_does_not_kill_the_endpoint(endpoints, raw_dealer):
    ep = endpoints("victim")
    evil = raw_dealer(ep.address, b"evil")
    evil.send_multipart([MAGIC + bytes([VERSION]), b"[" * 100_000])
    evil.send_multipart(Message("hello").encode())
    kinds = []
    for _ in range(2):
        got = ep.recv(timeout=2.0)
        if got is None:
            break
        kinds.append(got[1].kind)
    assert kinds == ["_bad", "hello"]


def test_a_shaped_send_is_not_delivered_before_the_latency(pair):
    a, b = pair
    # connect the sockets first so the first message does not pay for the handshake
    a.send("b", Message("warm"), shaped=False)
    assert _recv(b)[1].kind == "warm"
    a.set_link(LinkSpec(latency_s=0.2))
    t0 = time.monotonic()
    receipt = a.send("b", Message("late"))
    assert receipt.link_s == pytest.approx(0.2, abs=0.05)
    assert b.recv(timeout=0.1) is None  # certainly not yet
    sender, msg = _recv(b)
    elapsed = time.monotonic() - t0
    assert (sender, msg.kind) == ("a", "late")
    assert elapsed >= 0.2
    assert elapsed < 0.2 + TIMEOUT


def test_an_unshaped_send_skips_the_emulated_link(pair):
    a, b = pair
    a.set_link(LinkSpec(latency_s=30.0))
    receipt = a.send("b", Message("now"), shaped=False)
    assert receipt.link_s == 0.0
    assert _recv(b)[1].kind == "now"


def test_bandwidth_shaping_delays_a_large_message(pair):
    a, b = pair
    a.send("b", Message("warm"), shaped=False)
    _recv(b)
    a.set_link(LinkSpec(bandwidth_bps=8e6, burst_bytes=0))  # 1 MB/s
    payload = bytes(300_000)
    t0 = time.monotonic()
    receipt = a.send("b", Message("big", {}, [payload]))
    assert receipt.link_s >= 0.3
    _, msg = _recv(b)
    assert time.monotonic() - t0 >= 0.3
    assert msg.parts == [payload]


def test_sending_to_a_forgotten_peer_does_not_raise(pair):
    a, b = pair
    a.send("b", Message("before"))
    assert _recv(b)[1].kind == "before"
    a.forget("b")
    a.send("b", Message("after"))  # must not raise or hang
    a.send("nobody", Message("never known"))
    a.flush(timeout=TIMEOUT)
    assert a.pending_sends() == 0
    deadline = time.monotonic() + TIMEOUT
    while a.dropped_sends < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert a.dropped_sends == 2
    assert b.recv(timeout=0.2) is None
    # a forgotten peer can be connected again
    a.connect("b", b.address)
    a.send("b", Message("again"))
    assert _recv(b)[1].kind == "again"


def test_a_tick_callback_sends_heartbeats(endpoints):
    b = endpoints("b")
    a = endpoints("a", tick=lambda: [("b", Message("hb"))], tick_s=0.05)
    a.connect("b", b.address)
    kinds = {_recv(b)[1].kind for _ in range(3)}
    assert kinds == {"hb"}


def test_close_is_prompt():
    ep = Endpoint("lonely")
    t0 = time.monotonic()
    ep.close()
    assert time.monotonic() - t0 < TIMEOUT
    assert not ep._thread.is_alive()


def test_a_flooding_peer_is_bounded_per_peer_and_in_total(endpoints, raw_dealer):
    """A peer that sends faster than the endpoint consumes fills only its own share of the
    inbox; what does not fit is dropped on arrival and counted, and other peers still get
    through."""
    from swarmpress.swarm.transport import InboxLimits

    mib = 1 << 20
    ep = endpoints("victim", limits=InboxLimits(per_peer=2 * mib, total=3 * mib))
    evil = raw_dealer(ep.address, b"evil")
    blob = Message("fwd", {"n": 0}, [bytes(256 * 1024)]).encode()
    for _ in range(40):  # 10 MiB, nothing consumed meanwhile
        evil.send_multipart(blob)
    friend = endpoints("friend")
    friend.connect("victim", ep.address)
    deadline = time.monotonic() + 10 * TIMEOUT
    while sum(ep.dropped_in.values()) < 40 - 8 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ep.held_bytes() <= 2 * mib
    assert ep.dropped_in["evil"] >= 40 - 8 and ep.dropped_in_bytes >= 32 * 256 * 1024
    friend.send("victim", Message("hi"))
    got = []
    while (item := ep.recv(timeout=TIMEOUT)) is not None:
        got.append(item[0])
        if item[0] == "friend":
            break
    assert got.count("friend") == 1 and 1 <= got.count("evil") <= 8
    while ep.recv(timeout=0.2) is not None:
        pass
    assert ep.held_bytes() == 0  # consumed messages leave the account


def test_a_flood_of_tiny_messages_is_bounded_in_count(endpoints, raw_dealer):
    """Bytes alone do not bound memory: each message costs its objects. A flood of empty
    messages stops at the per-peer message bound."""
    from swarmpress.swarm.transport import InboxLimits

    ep = endpoints("victim", limits=InboxLimits(per_peer_messages=100, total_messages=150))
    evil = raw_dealer(ep.address, b"evil")
    tiny = Message("hb").encode()
    for _ in range(400):
        evil.send_multipart(tiny)
    deadline = time.monotonic() + 10 * TIMEOUT
    while sum(ep.dropped_in.values()) < 300 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ep.held_messages() == 100 and ep.dropped_in["evil"] == 300
    assert ep.held_bytes() >= 100 * 1024  # each counted with its overhead
    while ep.recv(timeout=0.2) is not None:
        pass
    assert ep.held_messages() == 0 and ep.held_bytes() == 0


def test_peer_names_are_checked():
    from swarmpress.swarm.framing import check_name

    for bad in ("", "a#b", "x" * 201, "\x00w", "tab\tname", 7):
        with pytest.raises(ValueError, match="peer name"):
            check_name(bad)
    assert check_name("s0r0") == "s0r0"
    with pytest.raises(ValueError, match="peer name"):
        Endpoint("w#1")


def test_inbox_limits_are_checked():
    from swarmpress.swarm.transport import InboxLimits

    with pytest.raises(ValueError, match="per_peer"):
        InboxLimits(per_peer=10, total=5)


def test_hundreds_of_peers_do_not_exhaust_the_sockets():
    """Every peer costs a DEALER and its monitor's two sockets: 400 unreachable peers (a
    large swarm's orchestrator) still leave room to reach a live one (red team: past
    libzmq's default of 1023 sockets, messages vanished and the I/O thread stalled)."""
    import socket

    a, b = Endpoint("a"), Endpoint("b")
    # ports nobody listens on, taken while b holds its own: picked before b, one of them
    # was once given to b, and a "gone" peer's ping reached it first
    ports = []
    for _ in range(400):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    try:
        for i, port in enumerate(ports):
            a.connect(f"gone{i}", f"tcp://127.0.0.1:{port}")
            a.send(f"gone{i}", Message("ping"))
        a.connect("b", b.address)
        a.send("b", Message("ping", {"n": 1}))
        got = b.recv(timeout=20)
        assert got is not None and got[1].head == {"n": 1}
        assert a.dropped_sends == 0
    finally:
        a.close()
        b.close()
