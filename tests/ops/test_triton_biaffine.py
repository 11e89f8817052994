"""Triton biaffine: block-boundary shapes with small forced tiles, fp64 exactness, half precisions."""

import importlib

import pytest
import torch
from mclner_helpers import compare_to_reference, impl_device
from test_op_biaffine import make_inputs

from mclner.ops import biaffine, biaffine_reference

kb = importlib.import_module("mclner.kernels.biaffine")

# N·C, N and Db straddle the forced 16-wide tiles (several tiles, ragged tails, Db > one K chunk).
BOUNDARY_SHAPES = [(1, 1, 5, 3), (2, 16, 16, 1), (1, 17, 33, 5), (1, 20, 40, 2), (1, 7, 17, 3)]


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(kb, "_blocks", lambda NC, N, Db, dtype, kind: (16, 16, 16))


def _device():
    return impl_device("triton")


@pytest.mark.parametrize("shape", BOUNDARY_SHAPES, ids=lambda s: "B{}N{}Db{}C{}".format(*s))
def test_small_tiles_fp32(small_tiles, shape):
    device = _device()
    compare_to_reference(
        lambda **k: biaffine(**k, impl="triton"),
        biaffine_reference,
        make_inputs(*shape, device=device),
        torch.float32,
        atol=1e-4,
    )


@pytest.mark.parametrize("shape", BOUNDARY_SHAPES[1:4], ids=lambda s: "B{}N{}Db{}C{}".format(*s))
def test_fp64_tight(shape):
    device = _device()
    if device.type == "cuda":
        pytest.skip("fp64 is checked in the interpreter, where it is exact numpy arithmetic")
    compare_to_reference(
        lambda **k: biaffine(**k, impl="triton"),
        biaffine_reference,
        make_inputs(*shape, device=device),
        torch.float64,
        atol=1e-10,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precisions(dtype):
    """bf16/fp16 tiles (fp32 accumulation) are at least as accurate as the same-precision reference."""
    device = _device()
    compare_to_reference(
        lambda **k: biaffine(**k, impl="triton"),
        biaffine_reference,
        make_inputs(2, 19, 24, 5, device=device),
        dtype,
        atol=1e-2,
    )


def test_non_contiguous_inputs():
    device = _device()
    x = make_inputs(2, 9, 12, 3, device=device, dtype=torch.float32)
    hs_t = x["hs"].transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
    U_t = x["U"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not hs_t.is_contiguous() and not U_t.is_contiguous()
    got = biaffine(hs_t, x["he"], U_t, x["W"], x["b"], impl="triton")
    want = biaffine_reference(**x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)
