"""Swarm messages on the wire: the envelope every message kind travels in.

A message is a ZeroMQ multipart message: b"SPW" + version byte, the UTF-8 JSON header
(`kind` plus fields), then zero or more binary parts (codec frames, token blocks). parse()
turns anything malformed into WireError with what is wrong: the transport counts and drops
it, so a peer that sends garbage cannot crash a stage. What each kind carries is
swarm.protocol's business; peers' addresses (tcp://HOST:PORT) are checked here.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from swarmpress.errors import SwarmpressError

MAGIC = b"SPW"
VERSION = 1
MAX_HEADER = 1 << 20


class WireError(SwarmpressError, ValueError):
    """A message that is not a well-formed swarm message of this version."""


@dataclass
class Message:
    kind: str
    head: dict[str, Any] = field(default_factory=dict)
    parts: list[bytes] = field(default_factory=list)

    def encode(self) -> list[bytes]:
        head = dict(self.head, kind=self.kind)
        return [
            MAGIC + bytes([VERSION]),
            json.dumps(head, separators=(",", ":")).encode(),
            *self.parts,
        ]

    @property
    def nbytes(self) -> int:
        return sum(len(p) for p in self.encode())


def parse(frames: list[bytes]) -> Message:
    """The Message in a multipart message, or WireError naming the problem."""
    if len(frames) < 2:
        raise WireError(f"a swarm message has at least 2 parts, got {len(frames)}")
    tag = bytes(frames[0])
    if len(tag) != 4 or tag[:3] != MAGIC:
        raise WireError(f"not a swarm message (starts with {tag[:8]!r})")
    if tag[3] != VERSION:
        raise WireError(
            f"peer speaks swarm protocol v{tag[3]}, this process v{VERSION}: "
            "run the same swarmpress version on every machine"
        )
    if len(frames[1]) > MAX_HEADER:
        raise WireError(f"message header of {len(frames[1])} bytes exceeds {MAX_HEADER}")
    try:
        head = json.loads(bytes(frames[1]))
    except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, huge integers
        raise WireError(f"message header is not JSON: {exc}") from None
    except RecursionError:
        raise WireError("message header nests too deeply") from None
    if not isinstance(head, dict) or not isinstance(head.get("kind"), str):
        raise WireError("message header must be a JSON object with a string 'kind'")
    kind = head.pop("kind")
    return Message(kind, head, [bytes(f) for f in frames[2:]])


_ADDRESS = re.compile(r"^tcp://[A-Za-z0-9_.:\[\]-]+:\d{1,5}$")


MAX_NAME = 200  # characters of a peer's name (its routing id adds a token; ZeroMQ: 255 bytes)


def check_name(name: object) -> str:
    """`name` if it can name a peer (1..MAX_NAME printable characters, no `#`, which
    starts a connection's token), else ValueError naming it."""
    ok = isinstance(name, str) and 0 < len(name.encode()) <= MAX_NAME
    if not ok or not name.isprintable() or "#" in name:
        raise ValueError(
            f"peer name {name!r} must be 1 to {MAX_NAME} printable characters without '#'"
        )
    return name


def check_address(address: object) -> str:
    """`address` if it is tcp://HOST:PORT, else ValueError naming it."""
    if not isinstance(address, str) or not _ADDRESS.match(address):
        raise ValueError(f"peer address {address!r} is not tcp://HOST:PORT")
    return address
