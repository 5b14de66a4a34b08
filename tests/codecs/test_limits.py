"""The decode-size cap is read when a frame is decoded, not when swarmpress is imported."""

import numpy as np
import pytest

import swarmpress as sp
from swarmpress.codecs.core import limits


@pytest.fixture(autouse=True)
def _no_override(monkeypatch):
    monkeypatch.setattr(limits, "_override", None)


def test_the_environment_is_read_at_decode_time(monkeypatch):
    frame = sp.get_codec("raw").encode(np.zeros((64, 64), dtype=np.float32))  # 16 KiB
    monkeypatch.setenv("SWARMPRESS_MAX_DECODE_BYTES", "4096")
    with pytest.raises(sp.CodecError, match="4096-byte decode limit"):
        sp.decode(frame)
    monkeypatch.setenv("SWARMPRESS_MAX_DECODE_BYTES", str(1 << 20))
    assert sp.decode(frame).shape == (64, 64)
    monkeypatch.delenv("SWARMPRESS_MAX_DECODE_BYTES")
    assert limits.max_decode_bytes() == 8 << 30


@pytest.mark.parametrize("bad", ["0", "-5", "lots", ""])
def test_a_bad_setting_is_named(monkeypatch, bad):
    monkeypatch.setenv("SWARMPRESS_MAX_DECODE_BYTES", bad)
    with pytest.raises(sp.CodecError, match="SWARMPRESS_MAX_DECODE_BYTES must be a positive"):
        limits.max_decode_bytes()


def test_set_max_decode_bytes_wins_over_the_environment(monkeypatch):
    monkeypatch.setenv("SWARMPRESS_MAX_DECODE_BYTES", "4096")
    sp.codecs.set_max_decode_bytes(1 << 20)
    assert limits.max_decode_bytes() == 1 << 20
