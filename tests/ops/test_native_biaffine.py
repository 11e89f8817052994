"""Native biaffine kernels: argument validation in C++, both CPU micro-kernels, strided inputs."""

import pytest
import torch

from mclner import _native
from mclner.ops import biaffine, biaffine_reference

cpu = _native.cpu_module()
pytestmark = pytest.mark.skipif(cpu is None, reason=f"native CPU module not built: {_native.cpu_error()}")


def make(B, N, Db, C, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g, dtype=torch.float64) * scale).to(dtype)  # noqa: E731
    return r(B, N, Db), r(B, N, Db), r(C, Db, Db, scale=Db**-0.5), r(C, 2 * Db, scale=(2 * Db) ** -0.5), r(C)


def pair_oracle(P, r, he):
    return torch.einsum("bice,bje->bijc", P, he) + r.unsqueeze(2)


# ---------------------------------------------------------------- the raw pair pass, both micro-kernels


ISAS = ["generic", "avx2", "avx512"]  # the cpu_isa levels 0, 1, 2


@pytest.mark.parametrize("isa", range(3), ids=ISAS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 13, 37, 5), (1, 33, 64, 6), (2, 17, 16, 7)])
def test_pair_pass_matches_oracle(isa, dtype, shape):
    if isa > ISAS.index(cpu.cpu_best_isa()):
        pytest.skip(f"this CPU cannot run the {ISAS[isa]} copy (best: {cpu.cpu_best_isa()})")
    B, N, Db, C = shape
    g = torch.Generator().manual_seed(N * Db + C)
    P = torch.randn(B, N, C, Db, generator=g, dtype=torch.float64)
    r = torch.randn(B, N, C, generator=g, dtype=torch.float64)
    he = torch.randn(B, N, Db, generator=g, dtype=torch.float64)
    dS = torch.randn(B, N, N, C, generator=g, dtype=torch.float64)
    Pc, rc, hec, dSc = (t.to(dtype) for t in (P, r, he, dS))
    code = _native.dtype_code(Pc)
    S = torch.empty(B, N, N, C, dtype=dtype)
    cpu.biaffine_forward(Pc.data_ptr(), Pc.stride(), rc.data_ptr(), rc.stride(), hec.data_ptr(), hec.stride(),
                         S.data_ptr(), B, N, Db, C, code, 2, isa=isa)  # fmt: skip
    dP = torch.empty(B, N, C, Db, dtype=dtype)
    dr = torch.empty(B, N, C, dtype=dtype)
    dhe = torch.empty(B, N, Db, dtype=dtype)
    cpu.biaffine_backward(dSc.data_ptr(), dSc.stride(), Pc.data_ptr(), Pc.stride(), hec.data_ptr(), hec.stride(),
                          dP.data_ptr(), dr.data_ptr(), dhe.data_ptr(), B, N, Db, C, code, 2, True, True,
                          isa=isa)  # fmt: skip
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(S.double(), pair_oracle(P, r, he), **tol)
    torch.testing.assert_close(dP.double(), torch.einsum("bijc,bje->bice", dS, he), **tol)
    torch.testing.assert_close(dr.double(), dS.sum(2), **tol)
    torch.testing.assert_close(dhe.double(), torch.einsum("bijc,bice->bje", dS, P), **tol)


# ---------------------------------------------------------------- the autograd provider


def _check_grads(inputs, upstream=None, atol=1e-9):
    want_leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    got_leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in inputs]
    want = biaffine_reference(*want_leaves)
    got = biaffine(*got_leaves, impl="cpu")
    torch.testing.assert_close(got, want, atol=atol, rtol=1e-7)
    up = torch.ones_like(want) if upstream is None else upstream
    want.backward(up)
    got.backward(up)
    for name, w, g in zip(("hs", "he", "U", "W", "b"), want_leaves, got_leaves):
        if w.requires_grad:
            torch.testing.assert_close(g.grad, w.grad, atol=atol, rtol=1e-7, msg=f"grad {name}")
        else:
            assert g.grad is None


def test_broadcast_upstream_gradient():
    """S.sum().backward() hands the kernel an expanded dS with all strides 0."""
    hs, he, U, W, b = make(2, 9, 12, 3)
    _check_grads([t.requires_grad_(True) for t in (hs, he, U, W, b)])


def test_non_contiguous_inputs_and_upstream():
    hs, he, U, W, b = make(2, 11, 20, 4)
    he_t = he.transpose(1, 2).contiguous().transpose(1, 2)  # e-stride N: the padded-copy path
    hs_s = torch.cat([hs, hs], dim=2)[:, :, ::2]  # stride-2 rows
    up = torch.randn(2, 11, 11, 4, 2, dtype=torch.float64)[..., 0]  # strided upstream gradient
    _check_grads([t.requires_grad_(True) for t in (hs_s, he_t, U, W, b)], upstream=up)


@pytest.mark.parametrize("which", ["hs", "he", "U", "W", "b"])
def test_single_input_requires_grad(which):
    names = ("hs", "he", "U", "W", "b")
    inputs = list(make(1, 6, 8, 2))
    inputs[names.index(which)].requires_grad_(True)
    _check_grads(inputs)


def test_no_input_requires_grad():
    out = biaffine(*make(1, 4, 8, 2), impl="cpu")
    assert not out.requires_grad
    torch.testing.assert_close(out, biaffine_reference(*make(1, 4, 8, 2)))


def test_float32_tile_aligned_shape():
    """Db a multiple of every tile width: the in-place (unpadded) operand paths."""
    x = make(2, 40, 64, 6, dtype=torch.float32, seed=3)
    _check_grads([t.requires_grad_(True) for t in x], upstream=torch.randn(2, 40, 40, 6), atol=2e-4)


# ---------------------------------------------------------------- argument validation in C++

GOOD = dict(B=1, N=2, Db=3, C=2, dtype=0)


def _fwd_args(**over):
    a = dict(P=1, P_strides=[12, 6, 3, 1], r=1, r_strides=[4, 2, 1], he=1, he_strides=[6, 3, 1], S=1, **GOOD)
    a.update(over)
    return a


def _bwd_args(**over):
    a = dict(dS=1, dS_strides=[8, 4, 2, 1], P=1, P_strides=[12, 6, 3, 1], he=1, he_strides=[6, 3, 1], dP=1, dr=1,
             dhe=1, need_dP=True, need_dhe=True, **GOOD)  # fmt: skip
    a.update(over)
    return a


BAD = [
    ("P", 0, "'P' is a null pointer"),
    ("he", 0, "'he' is a null pointer"),
    ("S", 0, "'S' is a null pointer"),
    ("B", 0, "'B' must be positive"),
    ("N", -1, "'N' must be positive"),
    ("Db", 0, "'Db' must be positive"),
    ("C", 0, "'C' must be positive"),
    ("dtype", 7, "'dtype'"),
    ("P_strides", [1, 1, 1], "'P_strides' must hold 4 strides"),
    ("he_strides", [1, -1, 1], "'he_strides' has a negative stride"),
]


@pytest.mark.parametrize("arg, value, words", BAD, ids=[b[0] + "-" + str(b[1]) for b in BAD])
def test_cpu_forward_rejects(arg, value, words):
    with pytest.raises(ValueError, match="biaffine") as info:
        cpu.biaffine_forward(**_fwd_args(**{arg: value}), num_threads=1)
    assert words in str(info.value)


def test_cpu_rejects_gpu_dtypes_and_threads():
    with pytest.raises(ValueError, match="'dtype'.*bfloat16"):
        cpu.biaffine_forward(**_fwd_args(dtype=3), num_threads=1)
    with pytest.raises(ValueError, match="'num_threads' must be positive"):
        cpu.biaffine_forward(**_fwd_args(), num_threads=0)


@pytest.mark.parametrize(
    "over, words",
    [
        (dict(dS=0), "'dS' is a null pointer"),
        (dict(dP=0), "'dP' is a null pointer"),
        (dict(dr=0), "'dr' is a null pointer"),
        (dict(dhe=0), "'dhe' is a null pointer"),
        (dict(P=0), "'P' is a null pointer"),
        (dict(dS_strides=[1, 1]), "'dS_strides' must hold 4 strides"),
    ],
)
def test_cpu_backward_rejects(over, words):
    with pytest.raises(ValueError, match="biaffine") as info:
        cpu.biaffine_backward(**_bwd_args(**over), num_threads=1)
    assert words in str(info.value)


def test_cpu_backward_skips_unrequested_outputs():
    """Null output pointers are fine for the passes that are not asked for (nothing is written)."""
    B, N, Db, C = 1, 3, 4, 2
    dS = torch.randn(B, N, N, C)
    he = torch.randn(B, N, Db)
    dhe = torch.zeros(B, N, Db)
    cpu.biaffine_backward(**_bwd_args(dS=dS.data_ptr(), dS_strides=list(dS.stride()), he=he.data_ptr(),
                                      he_strides=list(he.stride()), P=0, dP=0, dr=0, dhe=dhe.data_ptr(),
                                      need_dP=False, need_dhe=False, B=B, N=N, Db=Db, C=C), num_threads=1)  # fmt: skip
    assert (dhe == 0).all()


def test_cuda_bindings_validate_without_a_gpu():
    """The CUDA module checks its arguments before touching the device, so this runs anywhere."""
    mod = _native.cuda_module()
    if mod is None:
        pytest.skip(f"CUDA module not built: {_native.cuda_error()}")
    with pytest.raises(ValueError, match="'P' is a null pointer"):
        mod.biaffine_forward(**_fwd_args(P=0), device=0, stream=0)
    with pytest.raises(ValueError, match="'dtype'.*float64"):
        mod.biaffine_forward(**_fwd_args(dtype=1), device=0, stream=0)
    with pytest.raises(ValueError, match="'device'"):
        mod.biaffine_forward(**_fwd_args(), device=-1, stream=0)
    with pytest.raises(ValueError, match="'dhe' is a null pointer"):
        mod.biaffine_backward(**_bwd_args(dhe=0), device=0, stream=0)
    with pytest.raises(ValueError, match="'r_strides' must hold 3 strides"):
        mod.biaffine_forward(**_fwd_args(r_strides=[1]), device=0, stream=0)
