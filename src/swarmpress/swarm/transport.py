"""Peer-to-peer message transport over ZeroMQ, with emulated links on the sending side.

Why ZeroMQ (pyzmq): the swarm needs peers that appear, die and get replaced mid-run, and
a message to a dead peer must not hang or kill the sender. torch.distributed's process
groups fail as a whole when one rank dies and need a fixed world size; Ray brings a
cluster manager we do not need. ZeroMQ gives addressed TCP sockets that reconnect on
their own, multipart messages (header + codec frames without copies into one buffer),
bounded queues and non-blocking sends, and works the same on loopback and across
machines: a peer is just `tcp://host:port`.

Each Endpoint binds one ROUTER socket (everything addressed to it arrives there, tagged
with the sender's name) and keeps one DEALER per peer it talks to. All socket work
happens on one I/O thread; other threads hand it messages through a heap ordered by
emulated delivery time (links.Shaper) and a wake-up pipe. Messages that do not parse are
counted and dropped, never raised into the caller.

With `auth` (auth.PeerAuth: this peer's CURVE key pair and the run's key ring) every
socket is CurveZMQ: the ROUTER admits only the ring's keys, a message's sender is the name
its key proves (the ZAP User-Id), and a message whose socket claims another name is
dropped and counted (`forged`); ROUTER_HANDOVER is off, so no connection takes over
another's. Without it (loopback runs, tests) names are what sockets claim.

The inbox is bounded, per peer and in total, in bytes and in messages (InboxLimits): a
message that would pass a bound is dropped on arrival and counted (dropped_in, per sender),
so a peer that floods an endpoint costs it at most the bound, never the memory of every
message. Every connection's routing id is the peer's name and a random token, so no
connection can take another's name (a name is proven by CURVE where the run has keys).

Some ends of a connection are final in libzmq: a handshake the peer refused (a key its
authenticator does not know yet, say a successor orchestrator still loading the run's
keys) or a reply that is not ZMTP 3 leaves the socket with no reconnect, and sends to it
queue or fail forever. Each DEALER's monitor tells them apart from the ends libzmq
reconnects by itself: a disconnect not followed at once by its own reconnect attempt
(`CONNECT_RETRIED`) dials the peer afresh REDIAL_S later (`redialled`; handshakes the
peer refused are counted in `refused_by_peer`). Every DEALER costs three ZeroMQ sockets
(itself and its monitor's pair), so the context allows MAX_SOCKETS.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import zmq
from zmq.utils.monitor import parse_monitor_message

from swarmpress.swarm.auth import KeyPair, KeyRing, RingAuthenticator, dial_curve, serve_curve
from swarmpress.swarm.framing import Message, WireError, check_address, check_name, parse
from swarmpress.swarm.links import LinkSpec, Shaper

log = logging.getLogger("swarmpress.swarm")
HWM = 1000  # messages queued per peer before sends to it are dropped
REDIAL_S = 1.0  # after a connection libzmq gives up on: seconds until it is dialled afresh
MAX_SOCKETS = 3 * 4096 + 64  # a DEALER and its monitor's two for each of 64 x 64 peers
_REFUSED = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
_WATCHED = (
    _REFUSED | zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
)  # fmt: skip


@dataclass
class SendReceipt:
    """What one send cost: bytes on the wire and seconds until emulated delivery."""

    nbytes: int
    link_s: float


MAX_MESSAGE = 1 << 30  # bytes: a message larger than this is refused by the socket
INSTANCE_MARK = "#"  # a connection's routing id: the peer's name, `#`, a random token
MESSAGE_COST = 1024  # bytes each held message is counted beyond its frames (its objects)


@dataclass(frozen=True)
class PeerAuth:
    """CurveZMQ for an endpoint: its own key pair and the ring of the run's peers."""

    keys: KeyPair
    ring: KeyRing


@dataclass(frozen=True)
class InboxLimits:
    """Received, not yet consumed messages an endpoint holds, per sender and in total: in
    bytes (each message counted MESSAGE_COST beyond its frames) and in messages (a flood of
    tiny ones costs their objects, not their bytes)."""

    per_peer: int = MAX_MESSAGE  # one largest message (a newcomer's full state) fits
    total: int = 2 * MAX_MESSAGE
    per_peer_messages: int = 4096
    total_messages: int = 32768

    def __post_init__(self) -> None:
        if not 0 < self.per_peer <= self.total:
            raise ValueError("inbox limits: need 0 < per_peer <= total")
        if not 0 < self.per_peer_messages <= self.total_messages:
            raise ValueError("inbox limits: need 0 < per_peer_messages <= total_messages")


class Endpoint:
    """A named peer: receives on its own address, sends to named peers through a Shaper."""

    def __init__(
        self,
        name: str,
        host: str = "127.0.0.1",
        port: int = 0,
        link: LinkSpec | None = None,
        seed: int = 0,
        tick: Callable[[], list[tuple[str, Message]]] | None = None,
        tick_s: float = 0.25,
        limits: InboxLimits | None = None,
        auth: PeerAuth | None = None,
    ) -> None:
        self.name = check_name(name)
        self.limits = limits or InboxLimits()
        self.auth = auth
        self.forged = 0  # messages whose socket claimed a name its key does not prove
        self.ctx = zmq.Context()
        self.ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
        self._authenticator: RingAuthenticator | None = None
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        if auth is None:
            self.router.setsockopt(zmq.ROUTER_HANDOVER, 1)
        else:
            self._authenticator = RingAuthenticator(self.ctx, auth.ring)
            self._authenticator.start()
            serve_curve(self.router, auth.keys)
        self.router.setsockopt(zmq.RCVHWM, HWM * 4)
        self.router.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE)
        try:
            if port:
                self.router.bind(f"tcp://{host}:{port}")
            else:
                port = self.router.bind_to_random_port(f"tcp://{host}")
        except zmq.ZMQError as exc:
            if self._authenticator is not None:
                self._authenticator.stop()
            self.ctx.destroy(linger=0)
            raise OSError(f"cannot listen on {host}:{port}: {exc}") from None
        self.address = f"tcp://{host}:{port}"
        self.inbox: queue.Queue[tuple[str, Message, int]] = queue.Queue()
        self._held: dict[str, int] = {}  # bytes in the inbox per sender
        self._held_total = 0
        self._held_n: dict[str, int] = {}  # messages in the inbox per sender
        self._held_total_n = 0
        self.dropped_in: dict[str, int] = {}  # messages dropped on arrival per sender
        self.dropped_in_bytes = 0
        self.shaper = Shaper(link or LinkSpec(), seed)
        self.bad_messages = 0
        self.dropped_sends = 0
        self._peers: dict[str, str] = {}
        self._dealers: dict[str, zmq.Socket] = {}
        self._monitors: dict[zmq.Socket, str] = {}  # a DEALER's monitor -> its peer
        self._redial: dict[str, float] = {}  # peer -> when to dial it afresh
        self.refused_by_peer = 0  # our handshakes that peers refused
        self.redialled = 0  # connections libzmq gave up on, dialled afresh
        self._poller = zmq.Poller()
        self._stale: set[str] = set()
        self._heap: list[tuple[float, int, str, list[bytes]]] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._wake_addr = f"inproc://wake-{id(self)}"
        self._wake_local = threading.local()
        self._wake_rx = self.ctx.socket(zmq.PULL)
        self._wake_rx.bind(self._wake_addr)
        self._tick, self._tick_s = tick, tick_s
        self._running = True
        self._thread = threading.Thread(target=self._loop, name=f"io-{name}", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public
    def set_link(self, link: LinkSpec, seed: int = 0) -> None:
        self.shaper = Shaper(link, seed)

    def connect(self, name: str, address: str) -> None:
        """Remember where peer `name` listens (a new address replaces the old socket);
        ValueError for an address that is not tcp://HOST:PORT."""
        check_address(address)
        with self._lock:
            if self._peers.get(name) != address:
                self._peers[name] = address
                self._stale.add(name)
        self._wake()

    def forget(self, name: str) -> None:
        """Stop talking to a peer (it died): queued messages to it are discarded."""
        with self._lock:
            self._peers.pop(name, None)
            self._stale.add(name)
        self._wake()

    def send(self, dst: str, msg: Message, shaped: bool = True) -> SendReceipt:
        """Queue msg for dst; shaped messages wait for the emulated link."""
        frames = msg.encode()
        nbytes = sum(len(f) for f in frames)
        now = time.monotonic()
        at = self.shaper.schedule(dst, nbytes, now) if shaped else now
        with self._lock:
            heapq.heappush(self._heap, (at, next(self._seq), dst, frames))
        self._wake()
        return SendReceipt(nbytes, at - now)

    def recv(self, timeout: float | None = None) -> tuple[str, Message] | None:
        """The next (sender, message), or None after timeout seconds."""
        try:
            sender, msg, size = self.inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        with self._lock:
            left = self._held.get(sender, 0) - size
            count = self._held_n.get(sender, 0) - 1
            if count > 0:
                self._held[sender], self._held_n[sender] = left, count
            else:
                self._held.pop(sender, None)
                self._held_n.pop(sender, None)
            self._held_total -= size
            self._held_total_n -= 1
        return sender, msg

    def held_bytes(self) -> int:
        """Bytes of received messages waiting in the inbox (with MESSAGE_COST each)."""
        with self._lock:
            return self._held_total

    def held_messages(self) -> int:
        """Received messages waiting in the inbox."""
        with self._lock:
            return self._held_total_n

    def _admit(self, sender: str, size: int) -> bool:
        """Count a message of `size` bytes against the sender's and the total bounds; False
        (and counted) if it would pass any."""
        lim = self.limits
        with self._lock:
            mine, n = self._held.get(sender, 0), self._held_n.get(sender, 0)
            over_bytes = mine + size > lim.per_peer or self._held_total + size > lim.total
            over_count = n >= lim.per_peer_messages or self._held_total_n >= lim.total_messages
            if over_bytes or over_count:
                self.dropped_in[sender] = self.dropped_in.get(sender, 0) + 1
                self.dropped_in_bytes += size
                return False
            self._held[sender], self._held_n[sender] = mine + size, n + 1
            self._held_total += size
            self._held_total_n += 1
            return True

    def pending_sends(self) -> int:
        with self._lock:
            return len(self._heap)

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued message has been handed to its socket."""
        end = time.monotonic() + timeout
        while self.pending_sends() and time.monotonic() < end:
            time.sleep(0.005)

    @property
    def refused(self) -> int:
        """Handshakes refused because the key is not the run's (0 without auth)."""
        return self._authenticator.refused if self._authenticator is not None else 0

    def close(self) -> None:
        self._running = False
        self._wake()
        self._thread.join(timeout=5)
        if self._authenticator is not None:
            self._authenticator.stop()
        self.ctx.destroy(linger=0)

    # ------------------------------------------------------------------ I/O thread
    def _wake(self) -> None:
        sock = getattr(self._wake_local, "sock", None)
        if sock is None:
            sock = self.ctx.socket(zmq.PUSH)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self._wake_addr)
            self._wake_local.sock = sock
        with contextlib.suppress(zmq.ZMQError):  # a full pipe: the I/O thread is awake anyway
            sock.send(b"", zmq.NOBLOCK)

    def _dealer(self, dst: str) -> zmq.Socket | None:
        with self._lock:
            stale, self._stale = self._stale, set()
            addr = self._peers.get(dst)
        for name in stale:
            self._close_dealer(name)
        sock = self._dealers.get(dst)
        if sock is None and addr is not None:
            try:
                sock = self._new_dealer(dst, addr)
            except zmq.ZMQError as exc:  # e.g. out of sockets or file descriptors
                log.warning("%s: cannot open a socket to %s: %s", self.name, dst, exc)
                self._close_dealer(dst)
                return None
        return sock

    def _new_dealer(self, dst: str, addr: str) -> zmq.Socket | None:
        """A DEALER to dst at addr, watched by a monitor; None where it cannot be dialled."""
        sock = self.ctx.socket(zmq.DEALER)
        # name#random: a connection's routing id is its own, so no socket can squat
        # another's name (nor a successor an open connection of its predecessor's);
        # receivers read the name, which CURVE proves in an authenticated run
        sock.setsockopt(zmq.IDENTITY, f"{self.name}{INSTANCE_MARK}{secrets.token_hex(8)}".encode())
        if self.auth is not None:
            server = self.auth.ring.public(dst)
            if server is None:  # a peer the run has no key for: nothing to talk to
                sock.close(linger=0)
                log.warning("%s: no key for %s; not connecting", self.name, dst)
                return None
            dial_curve(sock, self.auth.keys, server)
        sock.setsockopt(zmq.LINGER, 1000)  # what flush() handed over still goes out
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.IMMEDIATE, 0)
        self._dealers[dst] = sock
        mon = sock.get_monitor_socket(_WATCHED)
        self._monitors[mon] = dst
        self._poller.register(mon, zmq.POLLIN)
        try:
            sock.connect(addr)
        except zmq.ZMQError as exc:  # e.g. a host name that does not resolve
            log.warning("%s: cannot connect to %s at %s: %s", self.name, dst, addr, exc)
            self._close_dealer(dst)
            return None
        return sock

    def _close_dealer(self, dst: str) -> None:
        """Close the socket to dst and its monitor (queued messages to it are dropped)."""
        self._redial.pop(dst, None)  # a re-dial was for this socket, never for a new one
        sock = self._dealers.pop(dst, None)
        if sock is None:
            return
        for mon in [m for m, name in self._monitors.items() if name == dst]:
            del self._monitors[mon]
            self._poller.unregister(mon)
            sock.disable_monitor()
            mon.close(linger=0)
        sock.close(linger=0)

    def _watch(self, mon: zmq.Socket) -> None:
        """Read a DEALER's monitor: a disconnect libzmq does not follow with a reconnect of
        its own schedules a fresh dial of the peer (module docstring)."""
        dst = self._monitors[mon]
        while True:
            try:
                frames = mon.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            event = parse_monitor_message(frames)["event"]
            if event & _REFUSED:
                self.refused_by_peer += 1
                log.warning("%s: %s refused the handshake", self.name, dst)
            elif event == zmq.EVENT_DISCONNECTED:
                self._redial[dst] = time.monotonic() + REDIAL_S
            else:  # libzmq reconnects by itself, or the connection is up
                self._redial.pop(dst, None)

    def _redial_due(self) -> None:
        """Drop the dead sockets whose fresh dial is due (the next send makes a new one)."""
        now = time.monotonic()
        for dst in [d for d, at in self._redial.items() if at <= now]:
            log.warning("%s: the connection to %s ended for good; dialling it afresh",
                        self.name, dst)  # fmt: skip
            self.redialled += 1
            self._close_dealer(dst)

    def _receive(self) -> None:
        while True:
            try:
                parts = self.router.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            frames = [p.bytes for p in parts]
            sender = frames[0].decode("utf-8", "replace").partition(INSTANCE_MARK)[0]
            if self.auth is not None:
                proven = parts[-1].get("User-Id")
                if proven != sender:  # a key of the run claiming another peer's name
                    self.forged += 1
                    log.warning("%s: %r claimed to be %r; dropped", self.name, proven, sender)
                    continue
            size = sum(len(f) for f in frames) + MESSAGE_COST
            try:
                msg = parse(frames[1:])
            except WireError as exc:  # parse turns every malformation into WireError
                self.bad_messages += 1
                log.warning("%s: dropped a message from %s: %s", self.name, sender, exc)
                reason = str(exc)[:500]
                cost = len(reason) + MESSAGE_COST
                if self._admit(sender, cost):
                    self.inbox.put((sender, Message("_bad", {"reason": reason}), cost))
                continue
            if self._admit(sender, size):
                self.inbox.put((sender, msg, size))

    def _deliver_due(self) -> float | None:
        """Send every message whose time has come; seconds until the next one (or None)."""
        while True:
            with self._lock:
                if not self._heap:
                    return None
                at = self._heap[0][0]
                wait = at - time.monotonic()
                if wait > 0:
                    return wait
                _, _, dst, frames = heapq.heappop(self._heap)
            sock = self._dealer(dst)
            if sock is None:
                self.dropped_sends += 1
                continue
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=False)
            except zmq.ZMQError:
                self.dropped_sends += 1

    def _loop(self) -> None:
        poller = self._poller
        poller.register(self.router, zmq.POLLIN)
        poller.register(self._wake_rx, zmq.POLLIN)
        next_tick = time.monotonic()
        while self._running:
            try:
                if self._redial:
                    self._redial_due()
                wait = self._deliver_due()
            except Exception:  # the I/O thread must outlive any one bad message
                log.exception("%s: sending failed", self.name)
                wait = None
            now = time.monotonic()
            if self._tick is not None and now >= next_tick:
                try:
                    for dst, msg in self._tick():
                        self.send(dst, msg, shaped=False)
                except Exception:
                    log.exception("%s: heartbeat callback failed", self.name)
                next_tick = now + self._tick_s
            timeout = self._tick_s if wait is None else min(wait, self._tick_s)
            if self._redial:
                timeout = min(timeout, max(0.0, min(self._redial.values()) - now))
            try:
                events = dict(poller.poll(max(0, int(timeout * 1000))))
            except zmq.ZMQError:
                break
            if self.router in events:
                try:
                    self._receive()
                except Exception:
                    log.exception("%s: receiving failed", self.name)
            for mon in [m for m in events if m in self._monitors]:
                try:
                    self._watch(mon)
                except Exception:
                    log.exception("%s: reading a connection's monitor failed", self.name)
            if self._wake_rx in events:
                while True:
                    try:
                        self._wake_rx.recv(zmq.NOBLOCK)
                    except zmq.Again:
                        break
        for mon in self._monitors:
            mon.close(linger=0)
        for sock in self._dealers.values():
            sock.close(linger=500)
