"""Regenerate tests/codecs/golden/frames.npz: one frame per codec and setting, on stored
inputs, with the hash of what each frame decodes to.

Run it only when a wire format changes on purpose (and say so in the frame-format docs):
    .venv/bin/python tests/codecs/golden/make_golden.py
test_golden.py then holds every later decoder to these bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import ml_dtypes
import numpy as np

import swarmpress as sp

OUT = Path(__file__).with_name("frames.npz")
BF16 = np.dtype(ml_dtypes.bfloat16)

# (case name, codec spec, input name): stateless codecs decode with swarmpress.decode.
# Format changes on purpose: topk-fp32 remade 2026-12-04 (topk became stateless: no stream
# flag, no error_feedback parameter; the payload is unchanged); stream-* remade 2026-12-04
# (lossy-stream frames carry a stream id: the payload header grew by 8 bytes).
CASES = [
    ("raw-bf16", "raw", "act_bf16"),
    ("zstd-fp32", "zstd", "act_fp32"),
    ("blockq-bf16", "blockq", "act_bf16"),
    ("lossless-bf16", "lossless", "act_bf16"),
    ("lossless-fast-fp16", "lossless:mode=fast", "act_fp16"),
    ("lossy-bf16", "lossy", "act_bf16"),
    ("lossy-lowrank-bf16", "lossy", "lowrank_bf16"),
    ("lossy-fp16", "lossy", "act_fp16"),
    ("lossy-relL2-fp32", "lossy:target=rel_l2:value=0.05", "act_fp32"),
    ("lossy-max-bf16", "lossy:mode=max", "act_bf16"),
    ("lossy-nan-bf16", "lossy", "nan_bf16"),
    ("topk-fp32", "topk", "act_fp32"),
]
STREAM = ("lossy-stream", 3)  # three frames of one stream, decoded by one follower
STREAM_ID = 0x5357_5046_0000_0001  # fixed, so the stored frames can be remade


def inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(20261204)
    act = rng.standard_normal((128, 64)) * np.exp(rng.standard_normal(64))
    act[3, 7] = 900.0  # a massive activation
    u = rng.standard_normal((256, 4)) * np.array([3.0, 2.0, 1.0, 0.5])
    low = u @ rng.standard_normal((4, 48)) + 0.05 * rng.standard_normal((256, 48))
    nan = act.copy()
    nan[0, 0], nan[1, 1] = np.nan, np.inf
    stream = [act * (1.0 + 0.1 * i) + 0.01 * rng.standard_normal(act.shape) for i in range(3)]
    return {
        "act_bf16": act.astype(BF16).view(np.uint16),  # bf16 stored as its bits
        "act_fp32": act.astype(np.float32),
        "act_fp16": act.astype(np.float16),
        "lowrank_bf16": low.astype(BF16).view(np.uint16),
        "nan_bf16": nan.astype(BF16).view(np.uint16),
        **{f"stream_{i}": s.astype(np.float32) for i, s in enumerate(stream)},
    }


def as_tensor(name: str, arr: np.ndarray) -> np.ndarray:
    return arr.view(BF16) if name.endswith("_bf16") else arr


def digest(x) -> str:
    return hashlib.sha256(np.ascontiguousarray(np.asarray(x)).tobytes()).hexdigest()


def main() -> None:
    ins = inputs()
    out: dict[str, np.ndarray] = {f"in/{k}": v for k, v in ins.items()}
    for case, spec, src in CASES:
        frame = sp.get_codec(spec).encode(as_tensor(src, ins[src]))
        out[f"frame/{case}"] = np.frombuffer(frame, dtype=np.uint8)
        y = sp.decode(frame)
        out[f"decoded/{case}"] = np.frombuffer(digest(y).encode(), dtype=np.uint8)
    codec = sp.get_codec(STREAM[0])
    enc, dec = codec.encoder(stream_id=STREAM_ID), codec.decoder()
    for i in range(STREAM[1]):
        frame = enc.encode(ins[f"stream_{i}"])
        out[f"frame/stream-{i}"] = np.frombuffer(frame, dtype=np.uint8)
        out[f"decoded/stream-{i}"] = np.frombuffer(digest(dec.decode(frame)).encode(), np.uint8)
    np.savez_compressed(OUT, **out)
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(CASES) + STREAM[1]} frames)")


if __name__ == "__main__":
    main()
