"""Authenticated peers: a run's CurveZMQ keys and the authenticator that checks them.

Why CurveZMQ (pyzmq's `zmq.auth`): every swarm socket is a ZeroMQ socket already, and
CURVE gives each connection an encrypted, key-authenticated handshake (Curve25519) that
ZeroMQ enforces before a single message reaches the code. The run's key ring maps each
peer name to its public key; the authenticator admits only those keys and tells the
receiving socket which name a connection's key belongs to (the ZAP User-Id), so a peer's
name is what its key proves, never what its socket claims.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from swarmpress.errors import AuthError

DOMAIN = "swarmpress"


@dataclass(frozen=True)
class KeyPair:
    """One peer's CURVE key pair (Z85 text, 40 characters each)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> KeyPair:
        public, secret = zmq.curve_keypair()
        return cls(public, secret)

    def __repr__(self) -> str:  # never print the secret
        return f"KeyPair(public={self.public.decode()!r})"


@dataclass
class KeyRing:
    """The names a run admits and their public keys; shared by a run's endpoints."""

    keys: dict[str, bytes] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, public: bytes) -> None:
        """Admit `name` with `public`; AuthError if the key is malformed or taken."""
        if len(public) != 40:
            raise AuthError(f"peer {name!r}: a CURVE public key is 40 Z85 characters")
        try:
            zmq.utils.z85.decode(public)
        except ValueError:
            raise AuthError(f"peer {name!r}: the public key is not Z85 text") from None
        with self._lock:
            owner = self._owner(public)
            if owner is not None and owner != name:
                raise AuthError(f"peer {name!r}: that key already belongs to {owner!r}")
            self.keys[name] = public

    def remove(self, name: str) -> None:
        with self._lock:
            self.keys.pop(name, None)

    def public(self, name: str) -> bytes | None:
        with self._lock:
            return self.keys.get(name)

    def name_of(self, public: bytes) -> str | None:
        """The name a public key belongs to, or None."""
        with self._lock:
            return self._owner(public)

    def _owner(self, public: bytes) -> str | None:  # the caller holds the lock
        return next((name for name, key in self.keys.items() if key == public), None)

    @classmethod
    def of(cls, keys: Mapping[str, bytes]) -> KeyRing:
        ring = cls()
        for name, key in keys.items():
            ring.add(name, key)
        return ring


class RingAuthenticator(ThreadAuthenticator):
    """Admits CURVE clients whose key is in the ring; their User-Id is the ring's name."""

    def __init__(self, context: zmq.Context, ring: KeyRing) -> None:
        super().__init__(context)
        self.ring = ring
        self.refused = 0  # handshakes with a key the ring does not hold

    def start(self) -> None:
        super().start()
        self.configure_curve_callback(DOMAIN, credentials_provider=self)

    def callback(self, domain: str, key: bytes) -> bool:
        """The credentials provider: is this Z85 public key one of the run's?"""
        ok = domain == DOMAIN and self.ring.name_of(key) is not None
        if not ok:
            self.refused += 1
        return ok

    def curve_user_id(self, client_public_key: bytes) -> str:
        name = self.ring.name_of(zmq.utils.z85.encode(client_public_key))
        return name if name is not None else ""


def serve_curve(sock: zmq.Socket, keys: KeyPair) -> None:
    """Make a receiving socket a CURVE server of the run's domain."""
    sock.setsockopt(zmq.ZAP_DOMAIN, DOMAIN.encode())
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def dial_curve(sock: zmq.Socket, keys: KeyPair, server_public: bytes) -> None:
    """Make a sending socket a CURVE client of a peer whose public key is server_public."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = server_public


def read_key_file(path: str | Path) -> tuple[str, KeyPair, bytes, int | None]:
    """(name, key pair, orchestrator public key, stage or None) from a key file; AuthError
    naming the problem."""
    try:
        raw = json.loads(Path(path).read_text(encoding="ascii"))
        name, pub, sec, orch = raw["name"], raw["public"], raw["secret"], raw["orch"]
        stage = raw.get("stage")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise AuthError(f"{path}: not a swarmpress key file ({exc})") from None
    if not all(isinstance(v, str) and len(v) == 40 for v in (pub, sec, orch)):
        raise AuthError(f"{path}: keys must be 40 Z85 characters")
    if not isinstance(name, str) or not name:
        raise AuthError(f"{path}: the key file names no worker")
    if stage is not None and (isinstance(stage, bool) or not isinstance(stage, int)):
        raise AuthError(f"{path}: stage must be an integer")
    return name, KeyPair(pub.encode(), sec.encode()), orch.encode(), stage


def write_key_file(path: Path, name: str, keys: KeyPair, orch_public: bytes,
                   stage: int | None = None) -> Path:  # fmt: skip
    """A peer's key file (JSON, mode 0600): its name (and stage), its key pair, the
    orchestrator's public key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"name": name, "public": keys.public.decode(), "secret": keys.secret.decode(),
            "orch": orch_public.decode()}  # fmt: skip
    if stage is not None:
        body["stage"] = stage
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(json.dumps(body))
    return path


def make_run_keys(out: str | Path, stages: int, replicas: int) -> dict[str, Path]:
    """Keys for a run whose workers dial in: orch.key (the orchestrator's), one key file per
    worker `s{stage}r{replica}` (give each worker its own), and ring.json (every public
    key, what the orchestrator admits). Returns name -> key file."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise AuthError(f"{out} is not empty; make a run's keys in a new folder")
    orch = KeyPair.generate()
    files = {"orch": write_key_file(out / "orch.key", "orch", orch, orch.public)}
    ring = {"orch": orch.public.decode()}
    for s in range(stages):
        for r in range(replicas):
            name, kp = f"s{s}r{r}", KeyPair.generate()
            files[name] = write_key_file(out / f"{name}.key", name, kp, orch.public, stage=s)
            ring[name] = kp.public.decode()
    (out / "ring.json").write_text(json.dumps(ring, indent=1), encoding="ascii")
    return files


def load_run_keys(folder: str | Path) -> tuple[KeyPair, KeyRing]:
    """The orchestrator's key pair and the run's ring from make_run_keys' folder."""
    folder = Path(folder)
    name, keys, _, _ = read_key_file(folder / "orch.key")
    if name != "orch":
        raise AuthError(f"{folder / 'orch.key'} is not the orchestrator's key file")
    try:
        ring = json.loads((folder / "ring.json").read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        raise AuthError(f"{folder}: no readable ring.json ({exc})") from None
    if not isinstance(ring, dict) or ring.get("orch") != keys.public.decode():
        raise AuthError(f"{folder}: ring.json does not belong to orch.key")
    return keys, KeyRing.of({str(k): str(v).encode() for k, v in ring.items()})


__all__ = [
    "DOMAIN", "KeyPair", "KeyRing", "RingAuthenticator", "dial_curve", "load_run_keys",
    "make_run_keys", "read_key_file", "serve_curve", "write_key_file",
]  # fmt: skip
