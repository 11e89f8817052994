import pytest
import torch
import torch.nn.functional as F
from mclner_helpers import FUSED_IMPLS, compare_to_reference, impl_device, impl_dtypes

from mclner.ops import info_nce, info_nce_reference

# M not a multiple of any block size; P not a power of two.
SHAPES = [(1, 8), (7, 5), (37, 24), (130, 128), (1000, 33)]


def make_inputs(M, P, device="cpu", dtype=torch.float64, correlated=True):
    g = torch.Generator().manual_seed(M * 131 + P)
    za = torch.randn(M, P, generator=g, dtype=torch.float64)
    zb = torch.randn(M, P, generator=g, dtype=torch.float64)
    if correlated:  # positives more similar than negatives, as in training
        zb = 0.6 * za + 0.8 * zb
    return {"za": za.to(device, dtype), "zb": zb.to(device, dtype)}


def test_reference_matches_naive():
    x = make_inputs(6, 4)
    for tau in (0.1, 0.5):
        a, b = F.normalize(x["za"], dim=-1), F.normalize(x["zb"], dim=-1)
        sim = torch.tensor([[float(a[i] @ b[j]) / tau for j in range(6)] for i in range(6)], dtype=torch.float64)
        row = torch.stack([-(sim[m, m] - torch.logsumexp(sim[m], 0)) for m in range(6)])
        col = torch.stack([-(sim[m, m] - torch.logsumexp(sim[:, m], 0)) for m in range(6)])
        torch.testing.assert_close(info_nce_reference(**x, temperature=tau, reduction="none"), row)
        torch.testing.assert_close(
            info_nce_reference(**x, temperature=tau, symmetric=True, reduction="sum"), ((row + col) / 2).sum()
        )


@pytest.mark.parametrize("impl", FUSED_IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "M{}P{}".format(*s))
@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_fused_matches_reference(impl, shape, symmetric, reduction):
    device = impl_device(impl)
    for dtype in impl_dtypes(impl, device):
        kw = dict(temperature=0.07 if shape[0] % 2 else 0.5, symmetric=symmetric, reduction=reduction)
        compare_to_reference(
            lambda **k: info_nce(**k, **kw, impl=impl),
            lambda **k: info_nce_reference(**k, **kw),
            make_inputs(*shape, device=device),
            dtype,
            atol=1e-9 if dtype == torch.float64 else 2e-4,
            rtol=0.0 if dtype == torch.float64 else 1e-5,
        )


@pytest.mark.parametrize("impl", FUSED_IMPLS)
def test_fused_zero_rows_and_large_logits(impl):
    """A zero row (normalize eps) and a tiny temperature (logits ~ 1e3) stay finite and correct."""
    device = impl_device(impl)
    x = make_inputs(45, 16, device=device, dtype=torch.float32)
    x["za"][3] = 0.0
    for tau in (1e-3, 0.1):
        got = info_nce(**x, temperature=tau, reduction="none", impl=impl)
        want = info_nce_reference(**{k: v.double() for k, v in x.items()}, temperature=tau, reduction="none")
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), want, atol=5e-3, rtol=1e-4)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
@pytest.mark.parametrize("symmetric", [False, True])
def test_gradcheck_float64(impl, symmetric):
    if impl != "reference":
        impl_device(impl)
    x = make_inputs(9, 5)
    args = (x["za"].requires_grad_(True), x["zb"].requires_grad_(True))
    fn = lambda a, b: info_nce(a, b, temperature=0.3, symmetric=symmetric, reduction="none", impl=impl)  # noqa: E731
    assert torch.autograd.gradcheck(fn, args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(temperature=0.0), ValueError, ["temperature", "positive"]),
        (dict(temperature=float("nan")), ValueError, ["temperature", "finite"]),
        (dict(temperature=float("inf")), ValueError, ["temperature", "finite"]),
        (dict(temperature="0.1"), TypeError, ["temperature"]),
        (dict(reduction="avg"), ValueError, ["reduction"]),
        (dict(symmetric=1), TypeError, ["symmetric"]),
    ],
)
def test_bad_scalars(kwargs, exc, words):
    x = make_inputs(5, 4)
    for impl in ("reference", "auto"):
        with pytest.raises(exc) as info:
            info_nce(**x, **kwargs, impl=impl)
        for w in words:
            assert w in str(info.value)


def test_bad_shapes_and_dtypes():
    x = make_inputs(5, 4)
    with pytest.raises(ValueError, match=r"zb.*\[M, P\]"):
        info_nce(x["za"], x["zb"][:4])
    with pytest.raises(ValueError, match="za"):
        info_nce(x["za"][0], x["zb"][0])
    with pytest.raises(TypeError, match="dtype"):
        info_nce(x["za"], x["zb"].float())
    with pytest.raises(ValueError, match="M"):
        info_nce(x["za"][:0], x["zb"][:0])
