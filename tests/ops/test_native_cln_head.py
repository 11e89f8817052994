"""Native-level checks of the cln_head kernels: argument validation, every CPU ISA path, threads."""

import pytest
import torch
import torch.nn.functional as F

from mclner import _native

_C = _native.cpu_module()
pytestmark = pytest.mark.skipif(_C is None, reason=f"native CPU module not built: {_native.cpu_error()}")

NAMES = ["gamma", "u", "n", "W1", "W2", "dS", "dgamma", "du", "dn", "dW1", "dW2"]


def core_inputs(B, N, D, H, C, dtype, scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, sc=1.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * sc).to(dtype)

    return {
        "gamma": r(B, N, D, sc=scale) + 1.0,
        "u": r(B, N, H, sc=scale),
        "n": r(B, N, D),
        "W1": r(H, D, sc=D**-0.5),
        "W2": r(C, H, sc=H**-0.5),
        "b2": r(C),
        "dS": r(B, N, N, C),
    }


def core_reference(gamma, u, n, W1, W2, b2):
    """The kernels' contract in plain torch: S_ij = W2 GELU(W1 (γ_i ⊙ n_j) + u_i) + b2."""
    pre = torch.einsum("bid,bjd,kd->bijk", gamma, n, W1) + u[:, :, None, :]
    return F.linear(F.gelu(pre), W2, b2)


def run_native(x, threads=1, isa=-1):
    B, N, D = x["n"].shape
    H, C = x["W1"].shape[0], x["W2"].shape[0]
    code = _native.dtype_code(x["n"])
    S = torch.empty(B, N, N, C, dtype=x["n"].dtype)
    _C.cln_head_forward(
        x["gamma"].data_ptr(), x["u"].data_ptr(), x["n"].data_ptr(), x["W1"].data_ptr(), x["W2"].data_ptr(),
        x["b2"].data_ptr(), S.data_ptr(), B, N, D, H, C, code, threads, isa,
    )
    out = {k: torch.full_like(x[k], float("nan")) for k in ("gamma", "u", "n", "W1", "W2")}
    _C.cln_head_backward(
        x["gamma"].data_ptr(), x["u"].data_ptr(), x["n"].data_ptr(), x["W1"].data_ptr(), x["W2"].data_ptr(),
        x["dS"].data_ptr(), out["gamma"].data_ptr(), out["u"].data_ptr(), out["n"].data_ptr(),
        out["W1"].data_ptr(), out["W2"].data_ptr(), B, N, D, H, C, code, threads, isa,
    )
    return S, out


def reference_grads(x):
    leaves = {k: x[k].double().requires_grad_(True) for k in ("gamma", "u", "n", "W1", "W2")}
    S = core_reference(**leaves, b2=x["b2"].double())
    S.backward(x["dS"].double())
    return S.detach(), {k: v.grad for k, v in leaves.items()}


ISA_NAMES = ["generic", "avx2", "avx512"]  # the cpu_isa levels 0, 1, 2
ISAS = list(range(ISA_NAMES.index(_C.cpu_best_isa()) + 1)) if _C is not None else []


@pytest.mark.parametrize("isa", ISAS, ids=lambda i: ISA_NAMES[i])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(2, 9, 37, 19, 3), (1, 17, 8, 33, 7)], ids=str)
def test_every_isa_matches_reference(isa, dtype, shape):
    """Odd sizes exercise the partial micro-tiles of every ISA's panel widths."""
    x = core_inputs(*shape, dtype)
    S, grads = run_native(x, threads=2, isa=isa)
    S_ref, g_ref = reference_grads(x)
    tol = dict(atol=1e-10, rtol=1e-9) if dtype == torch.float64 else dict(atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(S.double(), S_ref, **tol)
    for k, g in grads.items():
        torch.testing.assert_close(g.double(), g_ref[k], **tol, msg=lambda m, k=k: f"grad {k}: {m}")


def test_gelu_tails_float32():
    """Pre-activations far outside [-4, 4] (the fast erf clamps there) and near 0."""
    x = core_inputs(1, 6, 16, 12, 3, torch.float32, scale=8.0, seed=3)
    S, grads = run_native(x, threads=1)
    S_ref, g_ref = reference_grads(x)
    torch.testing.assert_close(S.double(), S_ref, atol=1e-4, rtol=1e-4)
    for k, g in grads.items():
        torch.testing.assert_close(g.double(), g_ref[k], atol=1e-3, rtol=1e-4)


def test_thread_count_does_not_change_result():
    x = core_inputs(3, 11, 20, 24, 4, torch.float64)
    S1, g1 = run_native(x, threads=1)
    S3, g3 = run_native(x, threads=3)
    torch.testing.assert_close(S1, S3, atol=1e-12, rtol=1e-12)
    for k in g1:
        torch.testing.assert_close(g1[k], g3[k], atol=1e-12, rtol=1e-12)


def _fwd_args(x, out, **over):
    B, N, D = x["n"].shape
    args = dict(
        gamma=x["gamma"].data_ptr(), u=x["u"].data_ptr(), n=x["n"].data_ptr(), W1=x["W1"].data_ptr(),
        W2=x["W2"].data_ptr(), b2=x["b2"].data_ptr(), S=out.data_ptr(), B=B, N=N, D=D, H=x["W1"].shape[0],
        C=x["W2"].shape[0], dtype=0, num_threads=1,
    )
    args.update(over)
    return args


@pytest.mark.parametrize(
    "over, words",
    [
        ({"gamma": 0}, ["cln_head", "'gamma'", "null"]),
        ({"n": 0}, ["'n'", "null"]),
        ({"S": 0}, ["'S'", "null"]),
        ({"B": 0}, ["'B'", "positive"]),
        ({"H": -3}, ["'H'", "positive"]),
        ({"C": 0}, ["'C'", "positive"]),
        ({"num_threads": 0}, ["'num_threads'"]),
        ({"dtype": 3}, ["'dtype'", "bfloat16"]),
        ({"dtype": 17}, ["'dtype'"]),
        ({"isa": 5}, ["'isa'"]),
    ],
)
def test_forward_validation(over, words):
    x = core_inputs(1, 3, 4, 5, 2, torch.float32)
    S = torch.empty(1, 3, 3, 2)
    with pytest.raises(ValueError) as info:
        _C.cln_head_forward(**_fwd_args(x, S, **over))
    for w in words:
        assert w in str(info.value)


@pytest.mark.parametrize("name", ["dS", "dgamma", "du", "dn", "dW1", "dW2", "W1"])
def test_backward_null_pointer(name):
    x = core_inputs(1, 3, 4, 5, 2, torch.float32)
    outs = {k: torch.empty_like(x[k[1:]]) for k in ("dgamma", "du", "dn", "dW1", "dW2")}
    ptrs = {k: x[k].data_ptr() for k in ("gamma", "u", "n", "W1", "W2", "dS")}
    ptrs.update({k: v.data_ptr() for k, v in outs.items()})
    ptrs[name] = 0
    with pytest.raises(ValueError, match=f"'{name}' is a null pointer"):
        _C.cln_head_backward(**ptrs, B=1, N=3, D=4, H=5, C=2, dtype=0, num_threads=1)


def test_cuda_binding_validates_before_launch():
    """Validation runs on the host, so it is testable without a GPU when the module is built."""
    mod = _native.cuda_module()
    if mod is None:
        pytest.skip(f"CUDA module not built: {_native.cuda_error()}")
    args = dict(gamma=1, u=1, n=1, W1=1, W2=1, b2=1, S=1, workspace=1, B=1, N=2, D=3, H=4, C=2, chunk=1,
                dtype=0, device=0, stream=0)
    for over, word in (({"gamma": 0}, "'gamma'"), ({"workspace": 0}, "'workspace'"), ({"chunk": 3}, "'chunk'"),
                       ({"D": 0}, "'D'"), ({"dtype": 1}, "'dtype'"), ({"device": -1}, "'device'")):
        with pytest.raises(ValueError, match=word):
            mod.cln_head_forward(**{**args, **over})
    bargs = dict(gamma=1, u=1, n=1, W1=1, W2=1, dS=1, dgamma=1, du=1, dn=1, dW1=1, dW2=1, workspace=1, B=1, N=2,
                 D=3, H=4, C=2, chunk=1, dtype=3, device=0, stream=0)
    for over, word in (({"dn": 0}, "'dn'"), ({"C": -1}, "'C'"), ({"dtype": 7}, "'dtype'")):
        with pytest.raises(ValueError, match=word):
            mod.cln_head_backward(**{**bargs, **over})


def test_provider_saves_no_pair_sized_tensors():
    """The autograd graph keeps O(B·N·D) tensors only: no [B, N, N, D] or [B, N, N, H] residue."""
    from mclner.ops import cln_head

    B, N, D, H, C = 2, 24, 16, 20, 3
    g = torch.Generator().manual_seed(0)
    shapes = {"h": (B, N, D), "W_alpha": (D, D), "b_alpha": (D,), "W_beta": (D, D), "b_beta": (D,),
              "W1": (H, D), "b1": (H,), "W2": (C, H), "b2": (C,)}
    x = {k: torch.randn(*s, generator=g).requires_grad_(True) for k, s in shapes.items()}
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        S = cln_head(**x, impl="cpu")
    assert S.shape == (B, N, N, C)
    assert saved and max(saved) <= B * N * max(D, H)
