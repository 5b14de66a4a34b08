"""CurveZMQ on the swarm transport: only the run's keys get in, and a name is what a key
proves. Real endpoints on loopback; absence is checked after a later message arrives."""

import json
import os
import time

import pytest
import zmq

from swarmpress.errors import AuthError
from swarmpress.swarm.auth import (
    KeyPair,
    KeyRing,
    dial_curve,
    load_run_keys,
    make_run_keys,
    read_key_file,
    write_key_file,
)
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


def test_a_member_squatting_another_name_does_not_lock_it_out(endpoints, run_keys):
    """A member connects first under another member's name (and under that name's own
    routing-id form) and stays connected: its messages are dropped and counted, and the
    real owner of the name still gets through, since every connection has its own id."""
    keys, _ = run_keys
    orch = endpoints("orch")
    squat = _raw(orch.address, b"w0", keys["w1"], keys["orch"].public)
    squat2 = _raw(orch.address, b"w0#0123456789abcdef", keys["w1"], keys["orch"].public)
    squat.send_multipart(Message("stepped", {"step": 3}).encode())
    squat2.send_multipart(Message("stepped", {"step": 4}).encode())
    _wait(lambda: orch.forged == 2, "the squatters' messages were not counted")
    w0 = endpoints("w0")
    w0.connect("orch", orch.address)
    for i in range(3):
        w0.send("orch", Message("ready", {"step": i}))
        got = orch.recv(timeout=TIMEOUT)
        assert got is not None and (got[0], got[1].kind) == ("w0", "ready")
    squat.close(linger=0)
    squat2.close(linger=0)


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


# -- key files: refused with AuthError naming the file and the problem (the CLI exits 2)


def _key_file(path, **change):
    """A valid worker key file at path (mode 0600), with `change` applied to its fields."""
    kp, orch = KeyPair.generate(), KeyPair.generate()
    body = {"name": "s0r0", "public": kp.public.decode(), "secret": kp.secret.decode(),
            "orch": orch.public.decode(), "stage": 0, **change}  # fmt: skip
    path.write_text(json.dumps(body))
    os.chmod(path, 0o600)
    return path


@pytest.mark.parametrize("field", ["secret", "public", "orch"])
@pytest.mark.parametrize("bad", ["~" * 40, "#" * 40, " " * 40, "é" * 40])
def test_key_material_that_is_not_a_curve_key_is_refused(tmp_path, field, bad):
    path = _key_file(tmp_path / "s0r0.key", **{field: bad})
    with pytest.raises(AuthError) as err:
        read_key_file(path)
    assert str(path) in str(err.value) and f"{field}: " in str(err.value)


def test_a_public_key_that_does_not_match_the_secret_is_refused(tmp_path):
    path = _key_file(tmp_path / "s0r0.key", public=KeyPair.generate().public.decode())
    with pytest.raises(AuthError, match="not the public key of the file's secret"):
        read_key_file(path)


def test_an_orchestrator_key_that_is_not_z85_is_refused_before_any_socket(tmp_path):
    make_run_keys(tmp_path / "k", 1, 1)
    orch = tmp_path / "k" / "orch.key"
    body = json.loads(orch.read_text())
    body["secret"] = "~" * 40
    orch.write_text(json.dumps(body))  # an existing 0600 file keeps its mode
    with pytest.raises(AuthError, match=r"orch\.key: secret: not a CURVE key"):
        load_run_keys(tmp_path / "k")
    with pytest.raises(AuthError, match="not Z85"):
        KeyRing().add("x", b"~" * 40)  # a KeyError inside z85.decode, not a crash


# -- key files are private: 0600 files in a 0700 folder, never written through a link


def _mode(path):
    return os.lstat(path).st_mode & 0o777


def test_run_keys_are_private_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        files = make_run_keys(tmp_path / "k", 1, 2)
        os.mkdir(tmp_path / "open", 0o777)  # an existing empty folder of this user's
        make_run_keys(tmp_path / "open", 1, 1)
    finally:
        os.umask(old)
    assert _mode(tmp_path / "k") == _mode(tmp_path / "open") == 0o700
    assert {_mode(p) for p in (tmp_path / "k").iterdir()} == {0o600}
    assert {_mode(p) for p in (tmp_path / "open").iterdir()} == {0o600}
    assert sorted(files) == ["orch", "s0r0", "s0r1"]
    assert load_run_keys(tmp_path / "k")[1].public("s0r1") is not None


def test_a_key_file_replaces_an_open_file_and_never_follows_a_link(tmp_path):
    kp, orch = KeyPair.generate(), KeyPair.generate()
    old = tmp_path / "old.key"
    old.write_text("old")
    os.chmod(old, 0o644)
    write_key_file(old, "s0r0", kp, orch.public)
    assert _mode(old) == 0o600 and read_key_file(old)[0] == "s0r0"
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "link.key"
    link.symlink_to(victim)
    with pytest.raises(AuthError, match=r"link\.key is a symbolic link"):
        write_key_file(link, "s0r0", kp, orch.public)
    assert victim.read_text() == "precious" and link.is_symlink()
    (tmp_path / "dir.key").mkdir()
    with pytest.raises(AuthError, match="not a regular file"):
        write_key_file(tmp_path / "dir.key", "s0r0", kp, orch.public)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "dir.key", "link.key", "old.key", "victim.txt"]  # fmt: skip  # no temporary left
    (tmp_path / "empty").mkdir()
    (tmp_path / "to-empty").symlink_to(tmp_path / "empty")
    with pytest.raises(AuthError, match="symbolic link"):
        make_run_keys(tmp_path / "to-empty", 1, 1)
    assert not any((tmp_path / "empty").iterdir())


def test_a_key_file_others_can_read_or_that_is_not_a_file_is_refused(tmp_path):
    path = _key_file(tmp_path / "s0r0.key")
    assert read_key_file(path)[0] == "s0r0"
    for mode in (0o640, 0o604, 0o620, 0o644):
        os.chmod(path, mode)
        with pytest.raises(AuthError, match=f"by other users \\(mode 0{mode:o}\\).*chmod 600"):
            read_key_file(path)
    (tmp_path / "dir.key").mkdir()
    os.mkfifo(tmp_path / "fifo.key")  # would block a plain open
    for odd in ("dir.key", "fifo.key", "/dev/zero"):
        with pytest.raises(AuthError, match="is not a regular file"):
            read_key_file(tmp_path / odd)
    # ring.json holds public keys: readable is fine, writable by others is not
    make_run_keys(tmp_path / "k", 1, 1)
    os.chmod(tmp_path / "k" / "ring.json", 0o644)
    load_run_keys(tmp_path / "k")
    os.chmod(tmp_path / "k" / "ring.json", 0o666)
    with pytest.raises(AuthError, match=r"ring\.json: the ring is writable by other users"):
        load_run_keys(tmp_path / "k")


def test_a_ring_larger_than_a_key_file_loads(tmp_path):
    make_run_keys(tmp_path / "k", 40, 40)  # `swarm keys` allows up to 64 x 64
    assert (tmp_path / "k" / "ring.json").stat().st_size > 64 * 1024  # past a key file's cap
    keys, ring = load_run_keys(tmp_path / "k")
    assert len(ring.keys) == 40 * 40 + 1 and ring.public("orch") == keys.public


def test_a_refused_handshake_is_dialled_again_once_the_key_is_known(run_keys):
    """libzmq ends a connection whose handshake was refused for good (no reconnect): a
    worker that met a successor orchestrator before it loaded the run's keys fell silent
    for the rest of the run. The endpoint dials such a peer afresh; once the peer knows
    the key, the messages sent after that arrive."""
    keys, _ = run_keys
    late_ring = KeyRing.of({"orch": keys["orch"].public})  # w0 not admitted yet
    orch = Endpoint("orch", auth=PeerAuth(keys["orch"], late_ring))
    w0 = Endpoint("w0", auth=PeerAuth(keys["w0"], KeyRing.of({
        "orch": keys["orch"].public, "w0": keys["w0"].public})))  # fmt: skip
    try:
        w0.connect("orch", orch.address)
        w0.send("orch", Message("ready", {"step": 0}))
        _wait(lambda: w0.refused_by_peer >= 1, "the refused handshake was not noticed")
        assert orch.refused >= 1 and orch.recv(timeout=0.2) is None
        late_ring.add("w0", keys["w0"].public)
        got, step = None, 1
        end = time.monotonic() + TIMEOUT
        while got is None and time.monotonic() < end:  # heartbeats, as a worker sends them
            w0.send("orch", Message("ready", {"step": step}))
            step += 1
            got = orch.recv(timeout=0.25)
        assert got is not None and (got[0], got[1].kind) == ("w0", "ready"), "never re-dialled"
    finally:
        w0.close()
        orch.close()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_re_dial_due_for_an_old_socket_leaves_the_new_one_alone(run_keys):
    """Refused by one orchestrator, then told it listens elsewhere (a successor that
    moved): the re-dial due for the refused socket must not close the new one, whose
    queued messages (the new peer not listening yet) all arrive once it does (red team)."""
    keys, _ = run_keys
    full = {"orch": keys["orch"].public, "w0": keys["w0"].public}
    w0 = Endpoint("w0", auth=PeerAuth(keys["w0"], KeyRing.of(full)))
    refusing = Endpoint("orch", auth=PeerAuth(keys["orch"], KeyRing.of({"orch": full["orch"]})))
    port = _free_port()
    later = None
    try:
        w0.connect("orch", refusing.address)
        w0.send("orch", Message("hello", {"n": -1}))
        _wait(lambda: w0.refused_by_peer >= 1, "the refusal was not noticed")
        w0.connect("orch", f"tcp://127.0.0.1:{port}")
        for i in range(5):
            w0.send("orch", Message("ready", {"n": i}))
        time.sleep(1.5)  # the refused socket's re-dial would have fallen due by now
        later = Endpoint("orch", port=port, auth=PeerAuth(keys["orch"], KeyRing.of(full)))
        got = []
        end = time.monotonic() + TIMEOUT
        while len(got) < 5 and time.monotonic() < end:
            r = later.recv(timeout=0.2)
            if r is not None:
                got.append(r[1].head["n"])
        assert got == [0, 1, 2, 3, 4]
    finally:
        for ep in (w0, refusing, later):
            if ep is not None:
                ep.close()


def test_a_peer_port_that_answered_garbage_once_is_dialled_again(run_keys):
    """A reply that is not ZMTP 3 ends a libzmq connection for good with no handshake
    event at all; the endpoint dials afresh and reaches the real peer that listens there
    afterwards (red team)."""
    import socket
    import threading

    port = _free_port()
    squat = socket.socket()
    squat.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squat.bind(("127.0.0.1", port))
    squat.listen(1)

    def answer_garbage() -> None:
        conn, _ = squat.accept()
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        time.sleep(0.3)
        conn.close()

    t = threading.Thread(target=answer_garbage, daemon=True)
    t.start()
    keys, ring = run_keys
    w0 = Endpoint("w0", auth=PeerAuth(keys["w0"], ring))
    real = None
    try:
        w0.connect("orch", f"tcp://127.0.0.1:{port}")
        w0.send("orch", Message("ready", {"n": 0}))
        t.join(timeout=TIMEOUT)
        squat.close()
        real = Endpoint("orch", port=port, auth=PeerAuth(keys["orch"], ring))
        got, n = None, 1
        end = time.monotonic() + TIMEOUT
        while got is None and time.monotonic() < end:
            w0.send("orch", Message("ready", {"n": n}))
            n += 1
            got = real.recv(timeout=0.25)
        assert got is not None and got[0] == "w0", "never dialled again"
    finally:
        w0.close()
        if real is not None:
            real.close()
