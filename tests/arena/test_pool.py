"""The held-out pool: drawn per arena with a secret, real MiniLM tensors, keyed rounds."""

from __future__ import annotations

import hashlib
import json
import random
import stat
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest
from typer.testing import CliRunner

from swarmpress.arena.pool import (
    MANIFEST,
    SECRET,
    Pool,
    PoolError,
    PoolWarning,
    build_pool,
    sample_seed,
)
from swarmpress.corpus.apex import to_apex_bytes
from swarmpress.corpus.store import load_corpus
from swarmpress.corpus.text import load_text

SMALL = dict(sequences=3, seq_len=32)  # 12 held-out pieces, 2 public; a second to build
MINILM_HIDDEN = 384


def _values(pool: Pool, entry) -> np.ndarray:
    return np.frombuffer(pool.read(entry), ml_dtypes.bfloat16).astype(np.float64)


def _files(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(root.iterdir())}


@pytest.fixture(scope="module")
def small_pool(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pool") / "pool"
    build_pool(root, secret=b"s" * 32, **SMALL)
    return root


@pytest.fixture(scope="module")
def prose(tmp_path_factory) -> Path:
    """A folder of the operator's own text: a .txt and a .md file (and a file to ignore)."""
    root = tmp_path_factory.mktemp("prose")
    docs = load_text().documents
    (root / "a.txt").write_text("\n\n".join(docs[10:40]))
    (root / "sub").mkdir()
    (root / "sub" / "b.md").write_text("\n\n".join(docs[40:60]))
    (root / "ignored.json").write_text("{}")
    return root


def test_fresh_homes_get_different_secrets_and_tensors(tmp_path):
    from swarmpress.arena.service import init_home

    homes = [tmp_path / "a", tmp_path / "b"]
    for h in homes:
        assert init_home(h, **SMALL)
    secrets_ = [(h / "pool" / SECRET).read_bytes() for h in homes]
    assert len(secrets_[0]) == 32 and secrets_[0] != secrets_[1]
    pools = [Pool(h / "pool") for h in homes]
    assert all(p.is_secret and p.notice is None for p in pools)
    held = [{p.read(e) for e in p.held_out} for p in pools]
    public = [{p.read(e) for e in p.public} for p in pools]
    assert held[0].isdisjoint(held[1]) and public[0].isdisjoint(public[1])
    assert not init_home(homes[0], **SMALL)  # an existing home is kept


def test_a_pool_is_deterministic_from_its_secret(small_pool, tmp_path):
    again = tmp_path / "again"
    build_pool(again, secret=b"s" * 32, **SMALL)
    assert _files(again) == _files(small_pool)
    other = tmp_path / "other"
    build_pool(other, secret=b"t" * 32, **SMALL)
    mine, theirs = _files(small_pool), _files(other)
    assert not {v for k, v in mine.items() if k.endswith(".bin")} & set(theirs.values())


def test_held_out_pool_shares_nothing_with_the_embedded_corpus(tmp_path):
    from swarmpress.corpus.build import default_corpus

    root = tmp_path / "pool"
    build_pool(root, sequences=3, seq_len=256)  # the default corpus's sequence length
    pool = Pool(root)
    corpus = load_corpus(default_corpus())
    assert {e.family for e in corpus.entries} == {"model", "synthetic"}
    whole, rows = set(), set()
    for _e, arr in corpus:
        bf = to_apex_bytes(np.asarray(arr))
        whole.add(hashlib.sha256(bf).digest())
        flat = np.frombuffer(bf, "<u2").reshape(-1, arr.shape[-1])
        for seq in range(0, flat.shape[0], 256):  # every sequence, as the old pool cut it
            whole.add(hashlib.sha256(flat[seq : seq + 256].tobytes()).digest())
        rows |= {hashlib.sha256(r.tobytes()).digest() for r in flat if r.shape[0] == 384}
    for e in pool.entries:
        data = pool.read(e)
        assert hashlib.sha256(data).digest() not in whole, e.name
        flat = np.frombuffer(data, "<u2").reshape(-1, MINILM_HIDDEN)
        assert not any(hashlib.sha256(r.tobytes()).digest() in rows for r in flat), e.name
        assert "synthetic" not in e.source and "all-MiniLM-L6-v2" in e.source
    assert len(pool.held_out) == 3 * 2 * 2 and len(pool.public) == 2


def test_pieces_are_real_minilm_activations_and_gradients(small_pool):
    pool = Pool(small_pool)
    assert {e.role for e in pool.held_out} == {"activation", "gradient"}
    assert {e.role for e in pool.public} == {"activation", "gradient"}
    assert {e.layer for e in pool.entries} <= {1, 2, 3, 4, 5}  # interior block boundaries
    for e in pool.entries:
        assert e.shape == (SMALL["seq_len"], MINILM_HIDDEN) and e.numel == 32 * 384
        x = _values(pool, e)
        assert np.isfinite(x).all() and x.std() > 0
        rows = x.reshape(e.shape)
        assert len({r.tobytes() for r in rows}) == len(rows)  # every token its own row
        if e.role == "activation":
            assert 0.2 < np.sqrt(np.mean(x**2)) < 5
            assert np.abs(x).max() > 8 * x.std()  # MiniLM's outlier channels, not noise
        else:
            assert np.sqrt(np.mean(x**2)) < 0.05  # gradients of a loss, far smaller
    names = [e.name for e in pool.entries]
    assert len(set(names)) == len(names)
    assert {pool.read(e) for e in pool.public}.isdisjoint(pool.read(e) for e in pool.held_out)
    files = {e.file for e in pool.entries}
    assert {p.name for p in small_pool.iterdir()} == files | {MANIFEST, SECRET}


def test_rounds_are_keyed_by_the_secret_and_stable_within_a_round(small_pool, tmp_path):
    a, a2 = Pool(small_pool), Pool(small_pool)
    other = tmp_path / "other"
    build_pool(other, secret=b"u" * 32, **SMALL)
    b = Pool(other)
    assert len(a.held_out) == len(b.held_out)

    def picks(pool: Pool, comp: str, r: int) -> list[int]:
        return [pool.held_out.index(e) for e in pool.sample(comp, r, 4)]

    assert all(a.sample("lossy", r, 4) == a2.sample("lossy", r, 4) for r in range(20))
    assert [picks(a, "lossy", r) for r in range(20)] != [picks(b, "lossy", r) for r in range(20)]
    assert [picks(a, "lossy", r) for r in range(20)] != [picks(a, "lossless", r) for r in range(20)]
    unkeyed = [random.Random(sample_seed(None, "lossy", r)).sample(range(12), 4) for r in range(20)]
    assert [picks(a, "lossy", r) for r in range(20)] != unkeyed
    assert sample_seed(b"x" * 32, "lossy", 3) != sample_seed(b"y" * 32, "lossy", 3)
    assert a.sample("lossy", 0, 99) == a.held_out


def test_the_secret_is_private_and_never_served(tmp_path):
    from fastapi.routing import APIRoute
    from fastapi.testclient import TestClient

    from swarmpress.arena.api import create_app
    from swarmpress.arena.service import Arena, init_home

    home = tmp_path / "home"
    init_home(home, **SMALL)
    secret_path = home / "pool" / SECRET
    secret = secret_path.read_bytes()
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert stat.S_IMODE((home / "pool").stat().st_mode) == 0o700
    manifest = (home / "pool" / MANIFEST).read_bytes()
    assert secret not in manifest and secret.hex().encode() not in manifest

    arena = Arena(home)
    try:
        app = create_app(arena)
        client = TestClient(app)
        for route in app.routes:
            if isinstance(route, APIRoute) and "GET" in route.methods and "{" not in route.path:
                body = client.get(route.path).content
                assert secret not in body and secret.hex().encode() not in body, route.path
        comps = client.get("/api/competitions").json()
        public = comps[0]["public_sample"]
        assert sorted(public) == sorted(e.name for e in arena.pool.public)
        url = "/api/competitions/lossless/sample/"
        assert client.get(url + public[0]).content == arena.pool.read(arena.pool.public[0])
        for name in (SECRET, MANIFEST, "..%2Fsecret", arena.pool.held_out[0].name,
                     arena.pool.held_out[0].file):  # fmt: skip
            assert client.get(url + name).status_code == 404, name
    finally:
        arena.Session.kw["bind"].dispose()


def test_a_pool_without_its_secret_is_refused(small_pool, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    for name, data in _files(small_pool).items():
        (copy / name).write_bytes(data)
    (copy / SECRET).unlink()
    with pytest.raises(PoolError, match="lost its secret"):
        Pool(copy)
    (copy / SECRET).write_bytes(b"z" * 32)
    with pytest.raises(PoolError, match="not the secret"):
        Pool(copy)
    (copy / SECRET).write_bytes((small_pool / SECRET).read_bytes())
    (copy / SECRET).chmod(0o644)
    with pytest.warns(PoolWarning, match="chmod 600"):
        Pool(copy)


def test_an_old_pool_without_a_secret_loads_with_a_notice(tmp_path):
    entries = []
    for i in range(6):
        data = to_apex_bytes(np.full((4, 8), i, np.float32))
        (tmp_path / f"t{i}.bin").write_bytes(data)
        entries.append({"name": f"t{i}", "file": f"t{i}.bin", "numel": 32, "public": i == 0,
                        "source": "all-MiniLM-L6-v2.L01.activation.bfloat16"})  # fmt: skip
    (tmp_path / MANIFEST).write_text(json.dumps({"entries": entries}))
    with pytest.warns(PoolWarning, match="without a secret"):
        pool = Pool(tmp_path)
    assert not pool.is_secret and "arena init" in pool.notice
    assert pool.held_out[0].role is None and pool.read(pool.public[0])
    # rounds as they were drawn before pools had a secret
    seed = hashlib.sha256(b"lossy:7").digest()
    old = random.Random(int.from_bytes(seed[:8], "little")).sample(pool.held_out, 2)
    assert pool.sample("lossy", 7, 2) == old


def test_the_operators_own_text_or_data_pack(prose, tmp_path):
    root = tmp_path / "pool"
    build_pool(root, text=prose, secret=b"p" * 32, **SMALL)
    meta = json.loads((root / MANIFEST).read_text())
    assert meta["text_source"] == str(prose) and meta["origin"] == "capture"
    assert len(Pool(root).held_out) == 12

    from swarmpress.data.pack import pack
    from swarmpress.data.records import make_record

    docs = load_text().documents[60:90]
    recs = [make_record(f"https://example.org/{i}", "2024-05-01T00:00:00Z", "local",
                        {"text": d}) for i, d in enumerate(docs)]  # fmt: skip
    pack(recs, tmp_path / "pack", seq_len=128)
    build_pool(tmp_path / "pool2", text=tmp_path / "pack", secret=b"p" * 32, **SMALL)
    meta = json.loads((tmp_path / "pool2" / MANIFEST).read_text())
    assert meta["text_source"] == f"pack:{tmp_path / 'pack'}"

    (tmp_path / "tiny.txt").write_text("Too short. Far too short.")
    with pytest.raises(PoolError, match="sentences"):
        build_pool(tmp_path / "pool3", text=tmp_path / "tiny.txt", **SMALL)
    with pytest.raises(PoolError, match="does not exist"):
        build_pool(tmp_path / "pool3", text=tmp_path / "missing", **SMALL)
    assert not (tmp_path / "pool3").exists() and not list(tmp_path.glob(".pool3*"))


def test_a_corpus_pool_keeps_only_model_tensors_and_refuses_the_embedded_corpus(tmp_path):
    from swarmpress.corpus.build import build_corpus, default_corpus

    with pytest.raises(PoolError, match="embedded default corpus"):
        build_pool(tmp_path / "p0", corpus_dir=default_corpus())
    corpus = build_corpus(tmp_path / "c", layers=[1, 2], seqs=2, seq_len=16, seed=5)
    entries = build_pool(tmp_path / "p1", corpus_dir=corpus, secret=b"c" * 32)
    pool = Pool(tmp_path / "p1")
    assert len(entries) == 2 * 2 * 2 and len(pool.public) == 2  # layers x roles x sequences
    assert all("synthetic" not in e.name and e.shape == (16, 384) for e in pool.entries)
    assert pool.is_secret and pool.origin == "corpus"


def test_arena_init_cli(prose, tmp_path):
    from swarmpress.cli import app

    runner = CliRunner()
    home = tmp_path / "home"
    args = ["arena", "init", "--home", str(home), "--sequences", "2", "--seq-len", "16"]
    result = runner.invoke(app, [*args, "--text", str(prose)])
    assert result.exit_code == 0, result.output
    assert (home / "arena.toml").is_file() and (home / "pool" / SECRET).is_file()
    assert json.loads((home / "pool" / MANIFEST).read_text())["text_source"] == str(prose)
    bad = runner.invoke(app, [*args[:3], str(tmp_path / "h2"), "--text", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "does not exist" in bad.stderr
    both = runner.invoke(app, [*args, "--text", str(prose), "--corpus", str(prose)])
    assert both.exit_code == 2 and "not both" in both.stderr
