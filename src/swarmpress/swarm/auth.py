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
import stat
import struct
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import zmq
from zmq.auth.thread import ThreadAuthenticator

from swarmpress.errors import AuthError

DOMAIN = "swarmpress"
MAX_KEY_FILE = 64 * 1024  # bytes: a key file is a few hundred; anything larger is not one
MAX_RING = 16 << 20  # bytes: a ring holds about 60 per peer


def z85_key(text: str | bytes) -> bytes | None:
    """The 32 raw bytes of a CURVE key in Z85 text (40 characters), or None if it is not one."""
    if len(text) != 40:
        return None
    try:
        raw = zmq.utils.z85.decode(text)
    except (ValueError, KeyError, struct.error):  # a character outside Z85, a group > 2**32
        return None
    return raw if len(raw) == 32 else None


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
        if z85_key(public) is None:
            raise AuthError(f"peer {name!r}: the public key is not Z85 text")
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


def _read_private(path: Path, what: str, forbidden: int = 0o077, limit: int = MAX_KEY_FILE) -> str:
    """The text of a key file only its owner may read (like ssh): AuthError for anything
    but a regular file of at most `limit` bytes with none of the `forbidden` mode bits (by
    default: no group or world access at all)."""
    try:
        # O_NONBLOCK: a FIFO must not hang the open; it is refused below
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise AuthError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise AuthError(f"{path}: the {what} is not a regular file")
        if st.st_mode & forbidden:
            who = "readable or writable" if forbidden & 0o044 else "writable"
            raise AuthError(f"{path}: the {what} is {who} by other users (mode "
                            f"{stat.S_IMODE(st.st_mode):04o}), so it is refused; "
                            f"chmod 600 {path}")  # fmt: skip
        chunks, size = [], 0
        while size <= limit and (chunk := os.read(fd, limit + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise AuthError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:
        raise AuthError(f"{path}: not a swarmpress {what} (over {limit} bytes)")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise AuthError(f"{path}: not a swarmpress {what} (not ASCII text)") from None


def read_key_file(path: str | Path) -> tuple[str, KeyPair, bytes, int | None]:
    """(name, key pair, orchestrator public key, stage or None) from a key file; AuthError
    naming the problem. The file must be a regular file that only its owner can read or
    write (mode 0600), as write_key_file makes it."""
    text = _read_private(Path(path), "key file")
    try:
        raw = json.loads(text)
        name, pub, sec, orch = raw["name"], raw["public"], raw["secret"], raw["orch"]
        stage = raw.get("stage")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise AuthError(f"{path}: not a swarmpress key file ({exc})") from None
    for fld, value in (("public", pub), ("secret", sec), ("orch", orch)):
        if not isinstance(value, str) or len(value) != 40:
            raise AuthError(f"{path}: {fld}: a CURVE key is 40 Z85 characters")
        if z85_key(value) is None:
            raise AuthError(f"{path}: {fld}: not a CURVE key (not Z85 text)")
    if zmq.curve_public(sec.encode()) != pub.encode():
        raise AuthError(f"{path}: public: not the public key of the file's secret key")
    if not isinstance(name, str) or not name:
        raise AuthError(f"{path}: the key file names no worker")
    if stage is not None and (isinstance(stage, bool) or not isinstance(stage, int)):
        raise AuthError(f"{path}: stage must be an integer")
    return name, KeyPair(pub.encode(), sec.encode()), orch.encode(), stage


def _private_dir(folder: Path) -> None:
    """Make folder (mode 0700) if it is missing; an existing one is left as it is."""
    if folder.is_symlink() or folder.exists():
        if not folder.is_dir():
            raise AuthError(f"{folder} is not a folder")
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        folder.mkdir(mode=0o700)
    except FileExistsError:  # made meanwhile: check what it is
        return _private_dir(folder)
    os.chmod(folder, 0o700)  # whatever the umask


def write_private(path: Path, text: str) -> Path:
    """Write text to path as a new file of mode 0600, whatever the umask and whatever was
    at path: the bytes go to a temporary file beside it (O_EXCL, 0600), renamed over path
    once complete. A symbolic link or anything but a regular file at path is refused
    (AuthError), never followed."""
    _private_dir(path.parent)
    _refuse_odd(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            os.fchmod(fd, 0o600)
            fh.write(text)
            fh.flush()
            os.fsync(fd)
        _refuse_odd(path)  # nothing odd appeared meanwhile
        os.replace(tmp, path)  # replaces a link itself, never its target
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _refuse_odd(path: Path) -> None:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise AuthError(f"{path} is a symbolic link; a private file is never written through one")
    if not stat.S_ISREG(st.st_mode):
        raise AuthError(f"{path} exists and is not a regular file")


def write_key_file(path: Path, name: str, keys: KeyPair, orch_public: bytes,
                   stage: int | None = None) -> Path:  # fmt: skip
    """A peer's key file (JSON, mode 0600, see write_private): its name (and stage), its
    key pair, the orchestrator's public key."""
    body = {"name": name, "public": keys.public.decode(), "secret": keys.secret.decode(),
            "orch": orch_public.decode()}  # fmt: skip
    if stage is not None:
        body["stage"] = stage
    return write_private(Path(path), json.dumps(body))


def make_run_keys(out: str | Path, stages: int, replicas: int) -> dict[str, Path]:
    """Keys for a run whose workers dial in: orch.key (the orchestrator's), one key file per
    worker `s{stage}r{replica}` (give each worker its own), and ring.json (every public
    key, what the orchestrator admits). Returns name -> key file. The folder is made mode
    0700 (an existing one must be empty, a folder of this user's, not a link, and is set
    to 0700); every file in it is 0600."""
    out = Path(out)
    new = "make a run's keys in a new folder"
    if out.is_symlink():
        raise AuthError(f"{out} is a symbolic link; {new}")
    if out.exists():
        try:
            fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError as exc:
            raise AuthError(f"{out} is not a folder ({exc.strerror or exc}); {new}") from None
        try:
            if os.fstat(fd).st_uid != os.geteuid():
                raise AuthError(f"{out} belongs to another user; {new}")
            os.fchmod(fd, 0o700)  # first, so nobody else can add anything from now on
            if os.listdir(fd):
                raise AuthError(f"{out} is not empty; {new}")
        finally:
            os.close(fd)
    else:
        _private_dir(out)
    orch = KeyPair.generate()
    files = {"orch": write_key_file(out / "orch.key", "orch", orch, orch.public)}
    ring = {"orch": orch.public.decode()}
    for s in range(stages):
        for r in range(replicas):
            name, kp = f"s{s}r{r}", KeyPair.generate()
            files[name] = write_key_file(out / f"{name}.key", name, kp, orch.public, stage=s)
            ring[name] = kp.public.decode()
    write_private(out / "ring.json", json.dumps(ring, indent=1))
    return files


def load_run_keys(folder: str | Path) -> tuple[KeyPair, KeyRing]:
    """The orchestrator's key pair and the run's ring from make_run_keys' folder."""
    folder = Path(folder)
    name, keys, _, _ = read_key_file(folder / "orch.key")
    if name != "orch":
        raise AuthError(f"{folder / 'orch.key'} is not the orchestrator's key file")
    try:
        # public keys only, but whoever can change it can join the run
        text = _read_private(folder / "ring.json", "ring", forbidden=0o022, limit=MAX_RING)
        ring = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise AuthError(f"{folder}: no readable ring.json ({exc})") from None
    if not isinstance(ring, dict) or ring.get("orch") != keys.public.decode():
        raise AuthError(f"{folder}: ring.json does not belong to orch.key")
    return keys, KeyRing.of({str(k): str(v).encode() for k, v in ring.items()})


__all__ = [
    "DOMAIN", "KeyPair", "KeyRing", "RingAuthenticator", "dial_curve", "load_run_keys",
    "make_run_keys", "read_key_file", "serve_curve", "write_key_file", "write_private",
    "z85_key",
]  # fmt: skip
