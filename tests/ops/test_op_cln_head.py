import pytest
import torch
import torch.nn.functional as F
from mclner_helpers import FUSED_IMPLS, compare_to_reference, impl_device, impl_dtypes

from mclner.ops import cln_head, cln_head_reference

# (B, N, D, H, C): N = 1, 7, 37, 130; D and H not powers of two.
SHAPES = [(1, 1, 12, 10, 3), (2, 7, 24, 20, 6), (2, 37, 48, 36, 5), (1, 130, 20, 12, 3)]
NAMES = ["h", "W_alpha", "b_alpha", "W_beta", "b_beta", "W1", "b1", "W2", "b2"]


def make_inputs(B, N, D, H, C, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(B * 7919 + N * 31 + D * 7 + H + C)
    def r(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale + shift).to(device, dtype)

    return {
        "h": r(B, N, D, scale=2.0, shift=0.3),
        "W_alpha": r(D, D, scale=D**-0.5),
        "b_alpha": r(D, shift=1.0, scale=0.1),
        "W_beta": r(D, D, scale=D**-0.5),
        "b_beta": r(D, scale=0.1),
        "W1": r(H, D, scale=D**-0.5),
        "b1": r(H, scale=0.1),
        "W2": r(C, H, scale=H**-0.5),
        "b2": r(C, scale=0.1),
    }


def test_reference_matches_per_pair_formula():
    x = make_inputs(1, 4, 6, 5, 3)
    S = cln_head_reference(**x, eps=1e-5)
    h = x["h"][0]
    for i in range(4):
        for j in range(4):
            gamma = x["W_alpha"] @ h[i] + x["b_alpha"]
            lam = x["W_beta"] @ h[i] + x["b_beta"]
            n = (h[j] - h[j].mean()) / torch.sqrt(((h[j] - h[j].mean()) ** 2).mean() + 1e-5)
            r = gamma * n + lam
            want = x["W2"] @ F.gelu(x["W1"] @ r + x["b1"]) + x["b2"]
            torch.testing.assert_close(S[0, i, j], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", FUSED_IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}N{}D{}H{}C{}".format(*s))
def test_fused_matches_reference(impl, shape):
    device = impl_device(impl)
    for dtype in impl_dtypes(impl, device):
        inputs = make_inputs(*shape, device=device)
        compare_to_reference(
            lambda **k: cln_head(**k, eps=1e-5, impl=impl),
            lambda **k: cln_head_reference(**k, eps=1e-5),
            inputs,
            dtype,
            atol=1e-8 if dtype == torch.float64 else 1e-4,
        )


@pytest.mark.parametrize("impl", FUSED_IMPLS)
def test_fused_eps_is_used(impl):
    device = impl_device(impl)
    x = make_inputs(1, 5, 12, 10, 3, device=device, dtype=torch.float32)
    x["h"][0, 2] = 0.25  # a constant row: normalisation is dominated by eps
    for eps in (1e-5, 0.5):
        got = cln_head(**x, eps=eps, impl=impl)
        want = cln_head_reference(**{k: v.double() for k, v in x.items()}, eps=eps)
        torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_gradcheck_float64(impl):
    if impl != "reference":
        impl_device(impl)
    x = make_inputs(2, 3, 5, 4, 2)
    args = tuple(x[k].requires_grad_(True) for k in NAMES)
    assert torch.autograd.gradcheck(lambda *a: cln_head(*a, impl=impl), args, eps=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "mutate, exc, words",
    [
        (lambda x: x.update(h=x["h"][0]), ValueError, ["'h'", "[B, N, D]"]),
        (lambda x: x.update(W_alpha=x["W_alpha"][:, :3]), ValueError, ["W_alpha", "[D, D]"]),
        (lambda x: x.update(b_beta=x["b_beta"][:2]), ValueError, ["b_beta"]),
        (lambda x: x.update(W1=x["W1"][:, :2]), ValueError, ["W1", "[H, D]"]),
        (lambda x: x.update(b1=x["b1"][:1]), ValueError, ["b1", "[H]"]),
        (lambda x: x.update(W2=x["W2"][:, :1]), ValueError, ["W2", "[C, H]"]),
        (lambda x: x.update(b2=x["b2"].float()), TypeError, ["dtype", "b2"]),
        (lambda x: x.update(h=x["h"].int()), TypeError, ["'h'", "floating"]),
    ],
)
def test_bad_inputs(mutate, exc, words):
    x = make_inputs(2, 3, 5, 4, 2)
    mutate(x)
    for impl in ("reference", "auto"):
        with pytest.raises(exc) as info:
            cln_head(**x, impl=impl)
        for w in words:
            assert w in str(info.value)


@pytest.mark.parametrize("eps", [float("nan"), float("inf"), 0.0, -1.0])
def test_bad_eps(eps):
    x = make_inputs(1, 2, 5, 4, 2)
    with pytest.raises(ValueError, match="eps"):
        cln_head(**x, eps=eps)
