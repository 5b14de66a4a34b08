"""Device-side quantize/dequantize of the `lossy` fast mode (torch), checked on CPU always and
on CUDA when one is present: it must agree to the bit with the host kernels."""

import numpy as np
import pytest
import torch

import swarmpress as sp
from swarmpress.codecs.core import base as codec_base
from swarmpress.codecs.core import frame
from swarmpress.codecs.core import tensors as tensors_mod
from swarmpress.codecs.core.tensors import DType
from swarmpress.codecs.families.lossy import device as lossy_torch
from swarmpress.codecs.families.lossy import fast as lossy_fast

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
DTYPES = [(torch.bfloat16, DType.BFLOAT16), (torch.float16, DType.FLOAT16),
          (torch.float32, DType.FLOAT32)]  # fmt: skip


def _tensor(dtype, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(96, 64, generator=g, dtype=torch.float64) * torch.exp(
        torch.randn(64, generator=g, dtype=torch.float64)
    )
    x[0, 3] = 400.0  # a massive activation
    return x.to(dtype).to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tdtype,dtype", DTYPES)
def test_device_encoder_meets_target_and_host_decoder_agrees(device, tdtype, dtype):
    x = _tensor(tdtype, device)
    payload = lossy_torch.encode(x, dtype, 96, 64, "similarity", 0.99)
    assert payload is not None
    host = lossy_fast.decode(memoryview(payload), dtype, 96, 64)
    assert (
        sp.similarity(
            x.cpu(),
            torch.from_numpy(host.view(np.int16)).view(tdtype)
            if tdtype == torch.bfloat16
            else torch.from_numpy(host),
        )
        > 0.99
    )
    on_device = lossy_torch.decode(memoryview(payload), dtype, (96, 64), 96, 64, device)
    assert on_device.device.type == device and on_device.dtype == tdtype
    back = on_device.cpu().contiguous()
    bits = back.view(torch.int16).numpy() if tdtype != torch.float32 else back.numpy()
    host_bits = host.view(np.int16) if tdtype != torch.float32 else host
    np.testing.assert_array_equal(bits.reshape(-1), host_bits.reshape(-1))


@pytest.mark.parametrize("tdtype,dtype", DTYPES)
def test_host_encoder_frames_dequantize_identically_on_the_torch_path(tdtype, dtype):
    x = _tensor(tdtype, "cpu", seed=1)
    blob = sp.get_codec("lossy", mode="fast").encode(x)
    payload = frame.unpack(blob).payload
    ref = sp.decode(blob)
    got = lossy_torch.decode(memoryview(payload)[1:], dtype, tuple(x.shape), 96, 64, "cpu")
    assert torch.equal(got.view(torch.int16) if tdtype != torch.float32 else got,
                       ref.view(torch.int16) if tdtype != torch.float32 else ref)  # fmt: skip


def test_codec_routes_accelerator_tensors_through_the_device_path(monkeypatch):
    # Pretend CPU is an accelerator so the routing in Codec.encode/decode is exercised here.
    calls = []
    real = lossy_torch.encode

    def spy(*a, **k):
        calls.append("encode")
        return real(*a, **k)

    monkeypatch.setattr(lossy_torch, "encode", spy)
    monkeypatch.setattr(codec_base, "on_accelerator", lambda t: tensors_mod.is_torch(t))
    x = _tensor(torch.bfloat16, "cpu", seed=2)
    codec = sp.get_codec("lossy", mode="fast")
    blob = codec.encode(x, role="activation")
    assert calls == ["encode"]
    y = codec.decode(blob, device="cpu")
    assert y.dtype == torch.bfloat16 and sp.similarity(x, y) > 0.99
    # max mode and non-finite tensors keep their host behaviour
    assert sp.similarity(x, sp.decode(sp.get_codec("lossy", mode="max").encode(x))) > 0.99
    bad = x.clone()
    bad[0, 0] = float("nan")
    back = codec.decode(codec.encode(bad))  # the host path carries it bit-exact
    assert torch.equal(back.view(torch.int16), bad.view(torch.int16))


def _low_rank(rows=512, chans=128, rank=8, seed=3):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(rows, rank, generator=g, dtype=torch.float64) * torch.linspace(3, 0.5, rank)
    v = torch.randn(rank, chans, generator=g, dtype=torch.float64)
    return u @ v + 0.05 * torch.randn(rows, chans, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("tdtype,dtype", DTYPES)
def test_device_encoder_sends_the_low_rank_part_and_both_sides_agree(device, tdtype, dtype):
    x = _low_rank().to(tdtype).to(device)
    payload = lossy_torch.encode(x, dtype, 512, 128, "similarity", 0.99)
    assert payload is not None and payload[9] & 0x02, "the shared directions were not sent"
    host_frame = sp.get_codec("lossy").encode(x.cpu())
    # the device encoder pays no more than the host one for the same tensor
    assert len(payload) <= 1.02 * (len(frame.unpack(host_frame).payload) - 1)
    host = lossy_fast.decode(memoryview(payload), dtype, 512, 128)
    on_device = lossy_torch.decode(memoryview(payload), dtype, (512, 128), 512, 128, device)
    assert on_device.device.type == device
    back = on_device.cpu().contiguous()
    bits = back.view(torch.int16).numpy() if tdtype != torch.float32 else back.numpy()
    host_bits = host.view(np.int16) if tdtype != torch.float32 else host
    np.testing.assert_array_equal(bits.reshape(-1), host_bits.reshape(-1))
    assert sp.similarity(x.cpu(), back) > 0.99


def test_the_device_encoder_keeps_to_max_rank():
    x = _low_rank().to(torch.bfloat16)
    off = lossy_torch.encode(x, DType.BFLOAT16, 512, 128, "similarity", 0.99, max_rank=0)
    assert off is not None and not off[9] & 0x02, "a low-rank part was sent with max_rank=0"
    y = lossy_fast.decode(memoryview(off), DType.BFLOAT16, 512, 128)
    assert sp.similarity(x, torch.from_numpy(y.view(np.int16)).view(torch.bfloat16)) > 0.99


def test_device_projection_matches_the_host_bits():
    from swarmpress.codecs.families.lossy import lowrank as lossy_lowrank

    rng = np.random.default_rng(5)
    basis = rng.integers(-(2**15) + 1, 2**15, size=(16, 96)).astype(np.int16)
    coeffs = rng.integers(-3000, 3000, size=(300, 16)).astype(np.int64)
    host = lossy_lowrank.project(coeffs, basis, 3.7e-4)
    for device in DEVICES:
        got = lossy_torch.project(torch.from_numpy(coeffs), basis, 3.7e-4, device)
        np.testing.assert_array_equal(got.cpu().numpy().reshape(-1), host)


@pytest.mark.parametrize("device", DEVICES)
def test_device_frames_do_not_depend_on_the_coder_threads(device):
    x = _low_rank(rows=2048).to(torch.bfloat16).to(device)
    one = lossy_torch.encode(x, DType.BFLOAT16, 2048, 128, "similarity", 0.99, threads=1)
    two = lossy_torch.encode(x, DType.BFLOAT16, 2048, 128, "similarity", 0.99, threads=2)
    assert one == two


def test_a_one_element_tensor_encodes_on_the_device_path_without_warnings():
    import warnings

    x = torch.tensor([[1.5]], dtype=torch.bfloat16)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        payload = lossy_torch.encode(x, DType.BFLOAT16, 1, 1, "similarity", 0.99)
    assert payload is not None
