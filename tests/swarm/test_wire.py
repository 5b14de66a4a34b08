"""Swarm messages on the wire: header framing, tensor frames and token blocks.

Malformed input of any kind must raise WireError (which the transport counts and drops),
never another exception that would take a stage down.
"""

import json
import struct

import numpy as np
import pytest
import torch
import zstandard
from hypothesis import given
from hypothesis import strategies as st

from swarmpress.codecs import Role, get_codec
from swarmpress.swarm.framing import MAGIC, MAX_HEADER, VERSION, Message, WireError, parse
from swarmpress.swarm.role_codecs import RoleCodecs
from swarmpress.swarm.tensors import decode_tensor
from swarmpress.swarm.tokens import pack_tokens, unpack_tokens

TAG = MAGIC + bytes([VERSION])


def _codecs(activation="none", gradient="lossy"):
    return RoleCodecs(activation, gradient, "topk:density=0.05:bits=4", "lossless:mode=fast")


# ---------------------------------------------------------------------- messages


def test_message_round_trip():
    msg = Message("fwd", {"key": "3/1", "path": ["s0r0", "s1r1"], "eval": False}, [b"a", b""])
    frames = msg.encode()
    assert frames[0] == TAG
    assert len(frames) == 4
    back = parse(frames)
    assert back == msg
    assert msg.nbytes == sum(len(f) for f in frames)


def test_message_kind_wins_over_a_kind_in_the_head():
    frames = Message("hb", {"kind": "other", "n": 1}).encode()
    back = parse(frames)
    assert back.kind == "hb"
    assert back.head == {"n": 1}


def test_parse_accepts_memoryviews_and_bytearrays():
    frames = Message("x", {"a": 1}, [b"\x00\x01"]).encode()
    back = parse([memoryview(frames[0]), bytearray(frames[1]), memoryview(frames[2])])
    assert back == Message("x", {"a": 1}, [b"\x00\x01"])
    assert all(type(p) is bytes for p in back.parts)


@pytest.mark.parametrize("frames", [[], [TAG]])
def test_too_few_parts(frames):
    with pytest.raises(WireError, match=f"at least 2 parts, got {len(frames)}"):
        parse(frames)


@pytest.mark.parametrize("tag", [b"XYZ\x01", b"SPW", b"SPW\x01\x00", b"", b"GET / HTTP/1.1"])
def test_wrong_magic(tag):
    with pytest.raises(WireError, match="not a swarm message"):
        parse([tag, b'{"kind":"x"}'])


def test_a_different_protocol_version_says_to_run_the_same_swarmpress():
    other = (VERSION + 1) % 256
    with pytest.raises(WireError) as info:
        parse([MAGIC + bytes([other]), b'{"kind":"x"}'])
    msg = str(info.value)
    assert f"v{other}" in msg
    assert f"v{VERSION}" in msg
    assert "same swarmpress version" in msg


def test_oversized_header():
    head = b'{"kind":"x","pad":"' + b"a" * MAX_HEADER + b'"}'
    with pytest.raises(WireError, match=f"exceeds {MAX_HEADER}"):
        parse([TAG, head])


@pytest.mark.parametrize("head", [b"{not json", b"\xff\xfe\xfd", b"", b'{"kind": "x"'])
def test_non_json_header(head):
    with pytest.raises(WireError, match="not JSON"):
        parse([TAG, head])


@pytest.mark.parametrize("head", [b"{}", b'{"kind": 3}', b"[1, 2]", b'"fwd"', b"null"])
def test_header_without_a_string_kind(head):
    with pytest.raises(WireError, match="string 'kind'"):
        parse([TAG, head])


def test_a_deeply_nested_header_is_a_wire_error():
    with pytest.raises(WireError):
        parse([TAG, b"[" * 100_000])


# ---------------------------------------------------------------------- tensors


def test_raw_codec_round_trip_is_exact():
    x = torch.randn(4, 16, 32)
    blob = _codecs().encode(x, Role.ACTIVATION, torch.float32)
    y = decode_tensor(blob, (4, 16, 32))
    assert y.dtype == torch.float32
    assert torch.equal(x, y)


def test_lossy_codec_round_trip_is_close():
    x = torch.randn(4, 16, 32)
    blob = _codecs().encode(x, Role.GRADIENT, torch.float32)
    assert len(blob) < x.numel() * 4 / 2  # it did compress
    y = decode_tensor(blob, (4, 16, 32))
    assert y.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(x.flatten(), y.flatten(), dim=0)
    assert cos > 0.99
    assert not torch.equal(x, y)


def test_a_bfloat16_wire_dtype_comes_back_as_float32():
    x = torch.randn(8, 64)
    blob = _codecs().encode(x, Role.ACTIVATION, torch.bfloat16)
    y = decode_tensor(blob)
    assert y.dtype == torch.float32
    assert torch.equal(y, x.to(torch.bfloat16).float())


def test_shorthand_codecs_resolve():
    rc = _codecs("none", "lossy")
    assert rc.codecs[Role.ACTIVATION].codec_id == "raw"
    assert rc.codecs[Role.GRADIENT].codec_id == "lossy"


@pytest.mark.parametrize("blob", [b"", b"garbage bytes", bytes(100), b"SWPF"])
def test_garbage_is_a_wire_error(blob):
    with pytest.raises(WireError, match="bad tensor frame"):
        decode_tensor(blob)


def test_a_truncated_frame():
    blob = _codecs().encode(torch.randn(64), Role.ACTIVATION, torch.float32)
    with pytest.raises(WireError, match="truncated"):
        decode_tensor(blob[:-10])


def test_a_corrupted_frame():
    blob = bytearray(_codecs().encode(torch.randn(64), Role.ACTIVATION, torch.float32))
    blob[len(blob) // 2] ^= 0xFF
    with pytest.raises(WireError, match="checksum"):
        decode_tensor(bytes(blob))


def test_the_wrong_expected_shape():
    blob = _codecs().encode(torch.randn(4, 8), Role.ACTIVATION, torch.float32)
    assert decode_tensor(blob, (4, 8)).shape == (4, 8)
    with pytest.raises(WireError, match=r"shape \(4, 8\) where \(8, 4\) was expected"):
        decode_tensor(blob, (8, 4))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_a_frame_holding_non_finite_values(bad):
    x = torch.randn(16)
    x[5] = bad
    blob = get_codec("raw").encode(x)
    with pytest.raises(WireError, match="NaN or infinite"):
        decode_tensor(blob)


def test_a_numpy_frame_decodes_to_torch():
    arr = np.arange(12, dtype=np.float32).reshape(3, 4)
    y = decode_tensor(get_codec("raw").encode(arr), (3, 4))
    assert isinstance(y, torch.Tensor)
    assert torch.equal(y, torch.from_numpy(arr))


def test_weight_delta_frames_carry_error_feedback_and_decode_alone():
    rc = _codecs()
    x = torch.randn(4096)
    first = decode_tensor(rc.encode(x, Role.WEIGHT_DELTA, torch.float32), (4096,))
    second = decode_tensor(rc.encode(x, Role.WEIGHT_DELTA, torch.float32), (4096,))
    # error feedback: the second frame carries what the first one left out
    assert 0 < int((first != 0).sum()) <= 4096 * 0.1
    assert not torch.equal(first, second)
    # without it, the same delta gives the same frame twice
    plain = RoleCodecs("lossy", "lossy", "topk:density=0.05:bits=4", "raw", error_feedback=False)
    a = plain.encode(x, Role.WEIGHT_DELTA, torch.float32)
    assert a == plain.encode(x, Role.WEIGHT_DELTA, torch.float32)


# ---------------------------------------------------------------------- tokens


def test_tokens_round_trip():
    tokens = torch.randint(0, 3000, (4, 128))
    blob = pack_tokens(tokens)
    back = unpack_tokens(blob, vocab=3000)
    assert back.dtype == torch.int64
    assert torch.equal(back, tokens)


def test_empty_and_zero_dim_token_blocks():
    empty = torch.zeros(0, 5, dtype=torch.long)
    assert unpack_tokens(pack_tokens(empty), vocab=1).shape == (0, 5)
    scalar = torch.tensor(7)
    assert unpack_tokens(pack_tokens(scalar), vocab=8).item() == 7


@pytest.mark.parametrize("bad", [-1, 3000, 10**6])
def test_out_of_vocab_ids(bad):
    tokens = torch.randint(0, 3000, (2, 16))
    tokens[1, 3] = bad
    with pytest.raises(WireError, match="outside the vocabulary of 3000"):
        unpack_tokens(pack_tokens(tokens), vocab=3000)


@pytest.mark.parametrize(
    "blob",
    [
        b"",
        b"\x02",
        b"\x02\x04\x00\x00\x00",  # shape cut short
        b"\x01\x04\x00\x00\x00not zstd",
        b"\x01\x05\x00\x00\x00" + zstandard.ZstdCompressor().compress(bytes(16)),  # 4 ids, not 5
        b"\x01\x04\x00\x00\x00" + zstandard.ZstdCompressor().compress(bytes(15)),  # odd bytes
    ],
)
def test_garbage_token_blocks(blob):
    with pytest.raises(WireError, match="bad token block"):
        unpack_tokens(blob, vocab=10)


def test_a_truncated_token_block():
    blob = pack_tokens(torch.randint(0, 100, (4, 64)))
    with pytest.raises(WireError, match="bad token block"):
        unpack_tokens(blob[:-3], vocab=100)


def test_a_token_block_claiming_a_huge_size_is_a_wire_error():
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(16))
    # frame header descriptor 0xE0: single segment, an 8-byte content size follows
    bogus = frame[:4] + bytes([0xE0]) + struct.pack("<Q", 1 << 62) + frame[6:]
    blob = bytes([1]) + np.array([4], np.int32).tobytes() + bogus
    with pytest.raises(WireError):
        unpack_tokens(blob, vocab=10)


# ---------------------------------------------------------------------- properties

_first = st.one_of(
    st.binary(max_size=8),
    st.just(TAG),
    st.integers(0, 255).map(lambda v: MAGIC + bytes([v])),
)
_header = st.one_of(
    st.binary(max_size=64),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=8,
    ).map(lambda v: json.dumps(v).encode()),
)


@given(st.lists(st.binary(max_size=64), max_size=5))
def test_parse_of_arbitrary_frames_raises_only_wire_error(frames):
    try:
        msg = parse(frames)
    except WireError:
        return
    assert isinstance(msg.kind, str)


@given(_first, _header, st.lists(st.binary(max_size=16), max_size=3))
def test_parse_of_near_valid_frames_raises_only_wire_error(first, header, rest):
    try:
        msg = parse([first, header, *rest])
    except WireError:
        return
    assert first == TAG
    assert msg.parts == rest


@given(st.binary(max_size=512))
def test_decode_tensor_of_arbitrary_bytes_raises_only_wire_error(blob):
    with pytest.raises(WireError):
        decode_tensor(blob)


_VALID_FRAME = get_codec("raw").encode(torch.randn(2, 8))


@given(st.integers(0, len(_VALID_FRAME) - 1), st.integers(1, 255), st.booleans())
def test_decode_tensor_of_damaged_frames_raises_only_wire_error(pos, flip, truncate):
    blob = bytearray(_VALID_FRAME)
    if truncate:
        blob = blob[:pos]
    else:
        blob[pos] ^= flip
    with pytest.raises(WireError):
        decode_tensor(bytes(blob))


@given(st.binary(max_size=256), st.integers(1, 1 << 20))
def test_unpack_tokens_of_arbitrary_bytes_raises_only_wire_error(blob, vocab):
    try:
        out = unpack_tokens(blob, vocab)
    except WireError:
        return
    assert out.dtype == torch.int64


_VALID_TOKENS = pack_tokens(torch.randint(0, 50, (3, 7)))


@given(st.integers(0, len(_VALID_TOKENS) - 1))
def test_unpack_tokens_of_truncated_blocks_raises_only_wire_error(cut):
    with pytest.raises(WireError):
        unpack_tokens(_VALID_TOKENS[:cut], 50)


def test_pays_off_is_the_break_even_rule():
    from swarmpress.swarm.links import LinkSpec
    from swarmpress.swarm.role_codecs import pays_off

    slow, fast = LinkSpec(10e6), LinkSpec(10e9)
    # 1 MB raw -> 200 KB on the wire for 20 ms of codec time: saves 640 ms at 10 Mbit/s,
    # loses at 10 Gbit/s (0.64 ms saved); never on an unshaped link
    assert pays_off(1_000_000, 200_000, 0.02, slow)
    assert not pays_off(1_000_000, 200_000, 0.02, fast)
    assert not pays_off(1_000_000, 200_000, 0.0, LinkSpec())
    assert not pays_off(1_000_000, 1_000_000, 0.0, slow)


def test_auto_settles_per_link():
    from swarmpress.swarm.links import LinkSpec
    from swarmpress.swarm.role_codecs import RoleCodecs

    x = torch.randn(4, 64, 128)
    slow = RoleCodecs("auto", "auto:blockq", "none", "none")
    assert slow.settle(Role.ACTIVATION, x, torch.float32, LinkSpec(1e6)) == "lossy"
    assert slow.settle(Role.GRADIENT, x, torch.float32, LinkSpec(1e6)) == "blockq"
    fast = RoleCodecs("auto", "lossy", "none", "none")
    assert fast.settle(Role.ACTIVATION, x, torch.float32, LinkSpec()) == "raw"
    # a fixed codec is never second-guessed
    assert fast.settle(Role.GRADIENT, x, torch.float32, LinkSpec()) == "lossy"
    blob = fast.encode(x, Role.ACTIVATION, torch.float32)
    assert torch.equal(decode_tensor(blob), x)


def test_optimizer_state_travels_under_its_role_with_the_weights_codec():
    import torch

    from swarmpress.codecs import Role, unpack_frame
    from swarmpress.swarm.role_codecs import WEIGHTS_ROLE, RoleCodecs

    assert WEIGHTS_ROLE is Role.WEIGHTS
    rc = RoleCodecs("raw", "raw", "topk", "lossless")
    for role in (Role.WEIGHTS, Role.OPTIMIZER_STATE):
        blob = rc.encode(torch.randn(64), role, torch.float32)
        assert unpack_frame(blob).codec_id == "lossless"
