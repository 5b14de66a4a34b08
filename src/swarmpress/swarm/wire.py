"""Swarm messages on the wire: a versioned JSON header plus binary parts (codec frames).

A message is a ZeroMQ multipart message: b"SPW" + version byte, the UTF-8 JSON header
(`kind` plus fields), then zero or more binary parts. Every tensor part is a swarmpress
codec frame (self-describing and checksummed), so a receiver needs nothing but the bytes;
token ids (integers, not tensors) travel as zstd-compressed int32. Anything malformed
raises WireError with what is wrong: the transport counts and drops it, so a peer that
sends garbage cannot crash a stage.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import zstandard

from swarmpress.codecs import Codec, CodecError, Role, codec_class
from swarmpress.codecs.frame import unpack
from swarmpress.codecs.specs import build_codec
from swarmpress.swarm.links import LinkSpec

MAGIC = b"SPW"
VERSION = 1
MAX_HEADER = 1 << 20
WIRE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# `none` is the uncompressed baseline: the raw tensor in a checked frame.
CODEC_ALIASES = {"none": "raw"}


class WireError(ValueError):
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


AUTO = "auto"  # `auto` or `auto:SPEC`: SPEC where it pays on the link, raw where it does not


def codec_spec(spec: str) -> str:
    """The full codec spec for a swarm shorthand (`none`, `lossy`, `auto`) or the spec itself
    (for `auto`, the codec it would use where compression pays)."""
    spec = spec.strip()
    if spec == AUTO or spec.startswith(AUTO + ":"):
        spec = spec[len(AUTO) + 1 :] or "lossy"
    return CODEC_ALIASES.get(spec, spec)


def make_codec(spec: str) -> Codec:
    """A codec from a spec or shorthand; CodecError naming the problem otherwise."""
    return build_codec(codec_spec(spec))


def pays_off(raw_bytes: int, wire_bytes: int, codec_s: float, link: LinkSpec) -> bool:
    """Whether encode + decode + the smaller transfer beat sending the raw bytes on `link`
    (the break-even bandwidth rule: B* = (raw - wire) / codec seconds)."""
    if link.bandwidth_bps is None:
        return False
    return codec_s + 8 * wire_bytes / link.bandwidth_bps < 8 * raw_bytes / link.bandwidth_bps


class RoleCodecs:
    """One codec per tensor role (activation, gradient, weight-delta, full weights)."""

    def __init__(self, activation: str, gradient: str, delta: str, weights: str) -> None:
        self.specs = {
            Role.ACTIVATION: activation,
            Role.GRADIENT: gradient,
            Role.WEIGHT_DELTA: delta,
            Role.UNSPECIFIED: weights,
        }
        self.codecs = {role: make_codec(s) for role, s in self.specs.items()}
        self.chosen = {role: codec_spec(s) for role, s in self.specs.items()}

    def settle(self, role: Role, sample: torch.Tensor, dtype: torch.dtype, link: LinkSpec) -> str:
        """For an `auto` role: time the codec on a tensor shaped like the traffic (best of
        three, decode included) and keep it only if it beats raw bytes on this link."""
        if not self.specs[role].strip().startswith(AUTO):
            return self.chosen[role]
        codec = self.codecs[role]
        t = sample.detach().to(dtype).contiguous()
        best, size = float("inf"), 0
        for _ in range(3):
            t0 = time.perf_counter()
            blob = codec.encode(t, role)
            decode_tensor(blob)
            best = min(best, time.perf_counter() - t0)
            size = len(blob)
        if not pays_off(t.numel() * t.element_size(), size, best, link):
            self.codecs[role] = make_codec("none")
            self.chosen[role] = codec_spec("none")
        return self.chosen[role]

    def encode(self, tensor: torch.Tensor, role: Role, dtype: torch.dtype) -> bytes:
        """The tensor as a frame of the role's codec, cast to the wire dtype first."""
        t = tensor.detach().to(dtype).contiguous()
        return self.codecs[role].encode(t, role)


def decode_tensor(blob: bytes, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """A float32 torch tensor from a codec frame; WireError if the frame is bad or the
    shape is not the one expected."""
    try:
        fr = unpack(blob)
        if shape is not None and tuple(fr.shape) != tuple(shape):  # before any allocation
            raise WireError(f"tensor of shape {tuple(fr.shape)} where {tuple(shape)} was expected")
        # Stateful encoders (topk's error feedback) write frames that the frame's own
        # parameters decode; the state lives on the sending side only.
        out = codec_class(fr.codec_id).from_config(fr.params).decode_frame(fr)
    except CodecError as exc:
        raise WireError(f"bad tensor frame: {exc}") from None
    t = out if isinstance(out, torch.Tensor) else torch.from_numpy(np.asarray(out, np.float32))
    if shape is not None and tuple(t.shape) != tuple(shape):
        raise WireError(f"tensor of shape {tuple(t.shape)} where {tuple(shape)} was expected")
    t = t.float()
    if not torch.isfinite(t).all():
        raise WireError("tensor frame holds NaN or infinite values")
    return t


_ZC = zstandard.ZstdCompressor(level=3)


def pack_tokens(tokens: torch.Tensor) -> bytes:
    arr = tokens.to(torch.int32).numpy()
    head = np.array(arr.shape, dtype=np.int32).tobytes()
    return bytes([arr.ndim]) + head + _ZC.compress(arr.tobytes())


MAX_TOKEN_BYTES = 1 << 26


def unpack_tokens(blob: bytes, vocab: int) -> torch.Tensor:
    """Token ids from pack_tokens; WireError if malformed or outside the vocabulary."""
    if not blob or blob[0] > 4 or len(blob) < 1 + 4 * blob[0]:
        raise WireError("bad token block: truncated or more than 4 dimensions")
    ndim = blob[0]
    shape = tuple(int(v) for v in np.frombuffer(blob[1 : 1 + 4 * ndim], dtype=np.int32))
    if any(v < 0 for v in shape) or 4 * math.prod(shape) > MAX_TOKEN_BYTES:
        raise WireError(f"bad token block: shape {shape}")
    body = blob[1 + 4 * ndim :]
    try:
        # The frame's own size claim must match the shape before anything is allocated.
        claimed = zstandard.frame_content_size(body)
        if claimed not in (4 * math.prod(shape), -1, zstandard.CONTENTSIZE_UNKNOWN):
            raise WireError(f"{claimed} bytes for shape {shape}")
        raw = zstandard.ZstdDecompressor().decompress(body, max_output_size=MAX_TOKEN_BYTES)
        arr = np.frombuffer(raw, dtype=np.int32).reshape(shape)
    except WireError as exc:
        raise WireError(f"bad token block: {exc}") from None
    except (ValueError, zstandard.ZstdError) as exc:
        raise WireError(f"bad token block: {exc}") from None
    if arr.size and (arr.min() < 0 or arr.max() >= vocab):
        raise WireError(f"token ids outside the vocabulary of {vocab}")
    return torch.from_numpy(arr.astype(np.int64))
