"""Apex conformance, matrix compression: files in the shape of Apex's published miner files
(tests/conformance/fixtures, written for these tests) are accepted at upload as the server
form and run unchanged in the arena sandbox, on both engines: started as
`python FILE --port N`, /health polled, the tensor uploaded as multipart field `file`."""

from __future__ import annotations

import ast
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from swarmpress.arena import envs
from swarmpress.arena.evaluate import bf16_to_f64, score_tensor
from swarmpress.arena.sandbox import Limits, run_call
from swarmpress.arena.validate import inspect_solution
from swarmpress.codecs import similarity
from tests.arena.conftest import small_config

FIXTURES = Path(__file__).with_name("fixtures")
ENV = "apex-matrix-compression"
SLOT = 8  # this folder's sandbox uid slot (tests/arena/test_sandbox.py uses 7)
# importing torch and starting uvicorn takes a few seconds under gVisor
LIMITS = Limits(wall_s=60, startup_s=120, cpu_s=120, nproc=64)


@pytest.fixture(scope="module")
def tensor() -> bytes:
    """A MiniLM-sized weight matrix (384 x 384, N(0, 0.04)) as little-endian bf16 bytes."""
    rng = np.random.default_rng(20240611)
    w = rng.normal(0.0, 0.04, size=(384, 384)).astype(np.float32)
    return w.astype(ml_dtypes.bfloat16).view(np.uint16).astype("<u2").tobytes()


@pytest.fixture
def zstd_server() -> Path:
    return FIXTURES / "apex_style_server.py"


@pytest.fixture
def lossy_server(tmp_path) -> Path:
    """The lossy fixture with CRLF line endings, whatever a checkout did to them."""
    raw = (FIXTURES / "apex_style_lossy_server.py").read_bytes().replace(b"\r\n", b"\n")
    path = tmp_path / "lossy_server.py"
    path.write_bytes(raw.replace(b"\n", b"\r\n"))
    return path


FEATURES = (  # the interface lines of Apex's published miner files
    "def compress_data(data: bytes) -> bytes:",
    "def decompress_data(data: bytes) -> bytes:",
    "def make_app() -> FastAPI:",
    '@app.get("/health")',
    '@app.post("/compress")',
    '@app.post("/decompress")',
    "file: UploadFile = File(...)",
    'media_type="application/octet-stream"',
    "HTTPException(status_code=400",
    'if __name__ == "__main__":',
    'add_argument("--port", type=int, default=8080)',
    'add_argument("--host", type=str, default="0.0.0.0")',
    'uvicorn.run(make_app(), host=args.host, port=args.port, log_level="info")',
)


def _imports(code: bytes) -> set[str]:
    found = set()
    for node in ast.parse(code).body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def test_the_fixtures_keep_the_published_interface(zstd_server, lossy_server):
    for path in (zstd_server, lossy_server):
        code = path.read_bytes()
        have = _imports(code)
        assert {
            "torch",
            "uvicorn",
            "argparse",
            "fastapi.FastAPI",
            "fastapi.UploadFile",
            "fastapi.File",
            "fastapi.HTTPException",
            "fastapi.responses.Response",
        } <= have
        text = code.decode()
        for feature in FEATURES:
            assert feature in text, (path.name, feature)
    assert "zstd" in _imports(zstd_server.read_bytes())
    assert "zstd.compress(data, LEVEL)" in zstd_server.read_text()
    lossy = lossy_server.read_bytes()
    assert lossy.count(b"\r\n") == lossy.count(b"\n") > 50  # every line ends in CRLF
    assert {"torch.nn.functional", "warnings", "brotli", "numpy"} <= _imports(lossy)
    assert b"torch.set_num_threads(1)" in lossy and b'print(f"DEBUG: ' in lossy


def test_both_are_accepted_at_upload_as_servers(zstd_server, lossy_server):
    modules = envs.get(ENV).modules()
    for path in (zstd_server, lossy_server):
        assert inspect_solution(path.read_bytes(), 65536, "lossy", modules, ENV) == "server"


def test_the_zstd_server_round_trips_bit_exactly(engine, zstd_server, tensor):
    c = run_call(zstd_server, "server", "compress", tensor, LIMITS, SLOT, engine=engine)
    assert c.ok, c.reason + c.log
    assert c.output[:4] == b"\x28\xb5\x2f\xfd" and len(c.output) < len(tensor)  # a zstd frame
    assert "Uvicorn running on http://0.0.0.0:" in c.log  # started by its own __main__
    d = run_call(zstd_server, "server", "decompress", c.output, LIMITS, SLOT, engine=engine)
    assert d.ok and d.output == tensor, d.reason + d.log
    lossless = small_config().competition[0]
    r = score_tensor(lossless, "minilm", tensor, c, d)
    assert lossless.track == "lossless" and r.ok and r.score > 0, r.reason


def test_an_empty_upload_is_answered_400(engine, zstd_server):
    r = run_call(zstd_server, "server", "compress", b"", LIMITS, SLOT, engine=engine)
    assert not r.ok and "POST /compress answered HTTP 400" in r.reason
    assert "the uploaded file is empty" in r.reason


def test_the_lossy_crlf_server_keeps_similarity_above_0_99(engine, lossy_server, tensor):
    c = run_call(lossy_server, "server", "compress", tensor, LIMITS, SLOT, engine=engine)
    assert c.ok, c.reason + c.log
    assert len(c.output) < 0.6 * len(tensor)
    assert f"DEBUG: /compress got {len(tensor)} bytes" in c.log
    d = run_call(lossy_server, "server", "decompress", c.output, LIMITS, SLOT, engine=engine)
    assert d.ok and len(d.output) == len(tensor), d.reason + d.log
    assert d.output != tensor  # lossy indeed
    sim = similarity(bf16_to_f64(tensor), bf16_to_f64(d.output))
    assert 0.99 < sim < 1.0
    lossy = small_config().competition[1]
    r = score_tensor(lossy, "minilm", tensor, c, d)
    assert lossy.track == "lossy" and r.ok and r.score > 0.4, r.reason
