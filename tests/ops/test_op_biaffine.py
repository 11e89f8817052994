import pytest
import torch
from mclner_helpers import FUSED_IMPLS, compare_to_reference, impl_device, impl_dtypes

from mclner.ops import biaffine, biaffine_reference

SHAPES = [(1, 1, 8, 3), (2, 7, 16, 6), (2, 37, 24, 5), (1, 130, 20, 3)]


def make_inputs(B, N, Db, C, device="cpu", dtype=torch.float64):
    g = torch.Generator().manual_seed(B * 1000 + N * 10 + Db + C)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(device, dtype)  # noqa: E731
    return {
        "hs": r(B, N, Db),
        "he": r(B, N, Db),
        "U": r(C, Db, Db, scale=Db**-0.5),
        "W": r(C, 2 * Db, scale=(2 * Db) ** -0.5),
        "b": r(C),
    }


def test_reference_matches_naive_loops():
    x = make_inputs(2, 5, 4, 3)
    S = biaffine_reference(**x)
    assert S.shape == (2, 5, 5, 3)
    for bb in range(2):
        for i in range(5):
            for j in range(5):
                for c in range(3):
                    hs, he = x["hs"][bb, i], x["he"][bb, j]
                    want = hs @ x["U"][c] @ he + x["W"][c] @ torch.cat([hs, he]) + x["b"][c]
                    assert abs(S[bb, i, j, c].item() - want.item()) < 1e-10


@pytest.mark.parametrize("impl", FUSED_IMPLS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "B{}N{}Db{}C{}".format(*s))
def test_fused_matches_reference(impl, shape):
    device = impl_device(impl)
    for dtype in impl_dtypes(impl, device):
        inputs = make_inputs(*shape, device=device)
        compare_to_reference(
            lambda **k: biaffine(**k, impl=impl),
            lambda **k: biaffine_reference(**k),
            inputs,
            dtype,
            atol=1e-9 if dtype == torch.float64 else 1e-4,
        )


@pytest.mark.parametrize("impl", ["reference", "cpu"])
def test_gradcheck_float64(impl):
    impl_device(impl) if impl != "reference" else None
    x = make_inputs(2, 3, 4, 2)
    args = tuple(v.requires_grad_(True) for v in x.values())
    assert torch.autograd.gradcheck(lambda *a: biaffine(*a, impl=impl), args, eps=1e-6, atol=1e-6)


def test_auto_picks_fused_on_cpu():
    from mclner.ops import available_impls, selected_impl

    want = "cpu" if available_impls()["cpu"]["runnable"] else "reference"
    assert selected_impl("biaffine", torch.device("cpu"), torch.float32) == want
    assert selected_impl("biaffine", torch.device("cpu"), torch.bfloat16) == "reference"


@pytest.mark.parametrize(
    "mutate, exc, words",
    [
        (lambda x: x.update(hs=x["hs"][0]), ValueError, ["hs", "[B, N, Db]"]),
        (lambda x: x.update(he=x["he"][:, :2]), ValueError, ["he", "shape"]),
        (lambda x: x.update(U=x["U"][:, :3]), ValueError, ["U", "[C, Db, Db]"]),
        (lambda x: x.update(W=x["W"][:, :4]), ValueError, ["W", "[C, 2*Db]"]),
        (lambda x: x.update(b=x["b"][:1]), ValueError, ["b", "[C]"]),
        (lambda x: x.update(b=x["b"].float()), TypeError, ["dtype", "b"]),
        (lambda x: x.update(hs=x["hs"].long()), TypeError, ["hs", "floating"]),
        (lambda x: x.update(U="nope"), TypeError, ["U", "torch.Tensor"]),
    ],
)
def test_bad_inputs(mutate, exc, words):
    x = make_inputs(2, 3, 4, 2)
    mutate(x)
    for impl in ("reference", "auto"):
        with pytest.raises(exc) as info:
            biaffine(**x, impl=impl)
        for w in words:
            assert w in str(info.value)


def test_bad_impl_name():
    x = make_inputs(1, 2, 4, 2)
    with pytest.raises(ValueError, match="impl"):
        biaffine(**x, impl="fast")
