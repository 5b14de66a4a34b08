"""Training text: real tokenizer, compact vocabulary, seeded samples, file and jsonl sources."""

import json

import numpy as np
import pytest
import torch

from swarmpress.swarm.text import DataError, TokenData, load_text, tokenizer_file

PARAGRAPH = (
    "The quick brown fox jumps over the lazy dog. Pipeline stages pass activations "
    "forward and gradients backward over slow links, so compression matters. "
)


@pytest.fixture(scope="module")
def default_data() -> TokenData:
    return TokenData.build()


def test_default_source_is_pydoc_with_the_minilm_tokenizer(default_data):
    d = default_data
    assert d.label == "pydoc_data.topics"
    assert d.tokenizer.endswith("tokenizer.json")
    assert d.tokenizer == str(tokenizer_file("minilm"))
    assert d.ids.dtype == np.int32
    assert d.ids.size > 50_000


def test_the_vocabulary_is_compact(default_data):
    d = default_data
    assert 100 < d.vocab < 30522  # fewer than MiniLM's full WordPiece vocabulary
    assert d.ids.min() == 0
    assert d.ids.max() == d.vocab - 1
    # compact: every id below vocab is used
    assert np.unique(d.ids).size == d.vocab


def test_samples_are_deterministic_per_seed_and_index(default_data):
    d = default_data
    a = d.sample(seed=0, index=3, batch=4, seq=32)
    assert a.shape == (4, 32)
    assert a.dtype == torch.int64
    assert int(a.max()) < d.vocab
    assert int(a.min()) >= 0
    assert torch.equal(a, d.sample(0, 3, 4, 32))
    assert not torch.equal(a, d.sample(0, 4, 4, 32))
    assert not torch.equal(a, d.sample(1, 3, 4, 32))


def _windows(region: np.ndarray, seq: int) -> set[bytes]:
    view = np.lib.stride_tricks.sliding_window_view(region, seq)
    return {row.tobytes() for row in view}


def test_train_and_eval_regions_are_disjoint(default_data):
    d = default_data
    train, held = d.region("train"), d.region("eval")
    assert train.size + held.size == d.ids.size
    assert held.size == pytest.approx(0.1 * d.ids.size, abs=1)
    assert not np.shares_memory(train, held)
    assert np.array_equal(np.concatenate([train, held]), d.ids)
    # every eval window lies inside the held-out tenth, every train window inside the rest
    seq = 24
    held_windows = _windows(held, seq)
    for i in range(5):
        for row in d.sample(0, i, 4, seq, split="eval").numpy().astype(np.int32):
            assert row.tobytes() in held_windows
    train_rows = d.sample(0, 0, 8, seq, split="train").numpy().astype(np.int32)
    train_windows = _windows(train, seq)
    for row in train_rows:
        assert row.tobytes() in train_windows


def test_an_unknown_split(default_data):
    with pytest.raises(ValueError, match="train or eval"):
        default_data.region("test")


def test_a_sequence_longer_than_the_region(default_data):
    too_long = default_data.region("eval").size + 1
    with pytest.raises(DataError, match="too few"):
        default_data.sample(0, 0, 1, too_long, split="eval")


def test_a_text_file_source(tmp_path):
    f = tmp_path / "corpus.txt"
    f.write_text(PARAGRAPH * 20, encoding="utf-8")
    d = TokenData.build(str(f))
    assert d.label == str(f)
    assert d.ids.size > 200
    assert d.vocab < 40  # the paragraph's few distinct words
    assert d.ids.max() == d.vocab - 1
    s = d.sample(5, 0, 2, 16)
    assert s.shape == (2, 16)


def test_a_directory_with_jsonl_in_both_shapes(tmp_path):
    (tmp_path / "sub").mkdir()
    with open(tmp_path / "a.jsonl", "w", encoding="utf-8") as fh:
        for i in range(10):
            fh.write(json.dumps({"text": f"alpha record {i}. " + PARAGRAPH}) + "\n")
        fh.write("\n")  # blank lines are skipped
        fh.write(json.dumps({"id": 3}) + "\n")  # no text: skipped
    with open(tmp_path / "sub" / "b.jsonl", "w", encoding="utf-8") as fh:
        for _ in range(5):
            fh.write(json.dumps({"content": {"text": "zebra giraffe okapi"}}) + "\n")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01 elephant elephant")
    label, text = load_text(str(tmp_path))
    assert label == str(tmp_path)
    assert text.count("alpha record") == 10
    assert text.count("zebra giraffe okapi") == 5
    assert "elephant" not in text
    d = TokenData.build(str(tmp_path))
    assert d.ids.size >= 64


def test_a_missing_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        TokenData.build(str(tmp_path / "nope.txt"))


def test_an_empty_directory(tmp_path):
    with pytest.raises(DataError, match="holds no"):
        TokenData.build(str(tmp_path))


def test_a_bad_jsonl_line_is_named(tmp_path):
    f = tmp_path / "data.jsonl"
    f.write_text(json.dumps({"text": PARAGRAPH}) + "\n{broken\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"data\.jsonl:2: not JSON"):
        TokenData.build(str(f))


def test_too_little_text(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("just a few words", encoding="utf-8")
    with pytest.raises(DataError, match="only"):
        TokenData.build(str(f))


def test_an_unknown_tokenizer_path(tmp_path):
    with pytest.raises(DataError, match=r"no tokenizer\.json"):
        TokenData.build(tokenizer=str(tmp_path / "no-such-tokenizer"))
    with pytest.raises(DataError, match=r"no tokenizer\.json"):
        TokenData.build(tokenizer=str(tmp_path))  # a directory without one


def test_a_broken_tokenizer_file(tmp_path):
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not a tokenizer", encoding="utf-8")
    with pytest.raises(DataError, match="cannot load tokenizer"):
        TokenData.build(tokenizer=str(tmp_path))


def test_a_tokenizer_by_path_matches_minilm(tmp_path, default_data):
    f = tmp_path / "corpus.txt"
    f.write_text(PARAGRAPH * 10, encoding="utf-8")
    by_name = TokenData.build(str(f), tokenizer="minilm")
    by_path = TokenData.build(str(f), tokenizer=default_data.tokenizer)
    assert np.array_equal(by_name.ids, by_path.ids)
    assert by_name.vocab == by_path.vocab
