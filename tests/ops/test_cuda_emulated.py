"""CUDA cases beyond the shared op tests: strided inputs and upstream gradients, the grid-size
boundary of biaffine, the device guard and the info_nce binding's checks.

Without a GPU these run through the emulated CUDA module (scripts/cuda_emulate.sh, MCLNER_CUDA_EMULATE):
the real bindings, launchers and kernels on CPU tensors. The shared cases (forward and every
gradient in float32/float16/bfloat16) are the impl="cuda" parameters of tests/ops/test_op_*.py.
"""

import pytest
import torch
from mclner_helpers import compare_to_reference, cuda_emulated, impl_device, impl_dtypes, mark_emulated

from mclner import _native
from mclner.ops import biaffine, biaffine_reference, cln_head, cln_head_reference, info_nce, info_nce_reference

ATOL = 1e-4  # as the shared op tests (non-float64)


def _gen(seed):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- strided inputs, strided upstream


def test_biaffine_strided_inputs_and_upstream():
    device = impl_device("cuda")
    B, N, Db, C = 2, 37, 24, 5
    g = _gen(11)
    x = {
        "hs": torch.randn(B, N, Db, generator=g, dtype=torch.float64),
        "he": torch.randn(B, N, Db, generator=g, dtype=torch.float64),
        "U": torch.randn(C, Db, Db, generator=g, dtype=torch.float64) * Db**-0.5,
        "W": torch.randn(C, 2 * Db, generator=g, dtype=torch.float64) * (2 * Db) ** -0.5,
        "b": torch.randn(C, generator=g, dtype=torch.float64),
    }
    x = {k: v.to(device) for k, v in x.items()}

    def strided(fn):
        def run(hs, he, U, W, b):
            hs_s = torch.cat([hs, hs], dim=2)[:, :, ::2]  # element stride 2
            he_t = he.transpose(1, 2).contiguous().transpose(1, 2)  # column-major rows
            # The transposed output makes the upstream gradient dS reach the kernel permuted.
            return fn(hs_s, he_t, U, W, b).transpose(1, 2)

        return run

    fused = strided(lambda *a: biaffine(*a, impl="cuda"))
    ref = strided(biaffine_reference)
    for dtype in impl_dtypes("cuda", device):
        compare_to_reference(lambda **k: fused(**k), lambda **k: ref(**k), x, dtype, atol=ATOL)


def test_info_nce_strided_rows():
    device = impl_device("cuda")
    M, P = 67, 40
    g = _gen(12)
    x = {"za": torch.randn(M, P, generator=g, dtype=torch.float64).to(device),
         "zb": torch.randn(M, P, generator=g, dtype=torch.float64).to(device)}  # fmt: skip

    def strided(fn):  # row stride 2P (column stride 1): the kernels take it as lda/ldb
        return lambda za, zb: fn(torch.cat([za, za], 1)[:, :P], torch.cat([zb, zb], 1)[:, P:],
                                 temperature=0.2, symmetric=True, reduction="sum")  # fmt: skip

    for dtype in impl_dtypes("cuda", device):
        compare_to_reference(
            strided(lambda a, b, **k: info_nce(a, b, **k, impl="cuda")),
            strided(lambda a, b, **k: info_nce_reference(a, b, **k)),
            x, dtype, atol=2e-4,
        )  # fmt: skip


def test_cln_head_strided_h():
    device = impl_device("cuda")
    B, N, D, H, C = 2, 13, 24, 20, 5
    g = _gen(13)
    shapes = {"h": (B, N, D), "W_alpha": (D, D), "b_alpha": (D,), "W_beta": (D, D), "b_beta": (D,),
              "W1": (H, D), "b1": (H,), "W2": (C, H), "b2": (C,)}  # fmt: skip
    x = {k: (torch.randn(*s, generator=g, dtype=torch.float64) * (s[-1] ** -0.5 if k.startswith("W") else 1.0))
         for k, s in shapes.items()}  # fmt: skip
    x["b_alpha"] = x["b_alpha"] * 0.1 + 1.0
    x = {k: v.to(device) for k, v in x.items()}

    def strided(fn):
        return lambda h, **k: fn(h=h.transpose(1, 2).contiguous().transpose(1, 2), **k, eps=1e-5).transpose(1, 2)

    for dtype in impl_dtypes("cuda", device):
        compare_to_reference(
            strided(lambda **k: cln_head(**k, impl="cuda")), strided(cln_head_reference), x, dtype, atol=ATOL
        )


# ---------------------------------------------------------------- biaffine: more row tiles than gridDim.y


def test_biaffine_rows_beyond_one_grid():
    """N·C rows in 64-row tiles on gridDim.y (at most 65,535): one row more than a grid holds needs a
    second launch; every row of both must be right (B=N=Db=1 keeps it cheap: S is [1,1,1,C])."""
    device = impl_device("cuda")
    mod = _native.cuda_module()
    C = 65535 * 64 + 1
    g = _gen(14)
    P = torch.randn(1, 1, C, 1, generator=g).to(device)
    r = torch.randn(1, 1, C, generator=g).to(device)
    he = torch.randn(1, 1, 1, generator=g).to(device)
    S = torch.full((1, 1, 1, C), float("nan"), device=device)
    index, stream = _native.cuda_launch_args(device)
    mod.biaffine_forward(P.data_ptr(), P.stride(), r.data_ptr(), r.stride(), he.data_ptr(), he.stride(),
                         S.data_ptr(), 1, 1, 1, C, 0, device=index, stream=stream)  # fmt: skip
    want = P[..., 0] * he[0, 0, 0] + r
    torch.testing.assert_close(S.view(1, 1, C), want, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- device guard, binding checks


@pytest.mark.parametrize("op", ["biaffine", "cln_head", "info_nce"])
def test_device_guard_reports_a_bad_device(op):
    """Every entry point opens the shared device scope: a device the runtime does not have is a clear
    error naming the op (hipify renames the call in the message). The emulator has exactly one device;
    a GPU machine may have a device 1, so this runs under emulation only."""
    if not cuda_emulated():
        pytest.skip("needs the emulated CUDA module (exactly one device)")
    mark_emulated(f"tests/ops/test_cuda_emulated.py::test_device_guard_reports_a_bad_device[{op}]")
    mod = _native.cuda_module()
    f = torch.zeros(4096)
    p = f.data_ptr()
    with pytest.raises(RuntimeError, match=f"{op}: (cuda|hip)SetDevice failed"):
        if op == "biaffine":
            mod.biaffine_forward(p, [8, 4, 2, 1], p, [4, 2, 1], p, [4, 2, 1], p, 1, 2, 2, 2, 0, device=1, stream=0)
        elif op == "cln_head":
            mod.cln_head_forward(p, p, p, p, p, p, p, p, B=1, N=2, D=3, H=4, C=2, chunk=1, dtype=0, device=1,
                                 stream=0)  # fmt: skip
        else:
            mod.info_nce_forward(p, 4, p, 4, 4, 4, 0, 0.5, False, 0, p, p, p, p, device=1, stream=0)


def test_info_nce_binding_validates_before_launch():
    """Validation runs on the host, so it is testable with any CUDA module (real or emulated)."""
    mod = _native.cuda_module()
    if mod is None:
        pytest.skip(f"CUDA module not built: {_native.cuda_error()}")
    if cuda_emulated():
        mark_emulated("tests/ops/test_cuda_emulated.py::test_info_nce_binding_validates_before_launch")
    good = dict(a=1, lda=8, b=1, ldb=8, M=4, P=8, dtype=0, temperature=0.5, symmetric=True, reduction=0, out=1,
                row_lse=1, col_lse=1, work=1, device=0, stream=0)  # fmt: skip
    for over, word in (({"a": 0}, "'a' is a null pointer"), ({"lda": 7}, "'lda' must be >= P"),
                       ({"M": 0}, "'M' must be positive"), ({"dtype": 1}, "'dtype'"),
                       ({"temperature": 0.0}, "'temperature' must be positive"),
                       ({"temperature": float("nan")}, "'temperature' must be finite"),
                       ({"reduction": 3}, "'reduction'"), ({"col_lse": 0}, "'col_lse' is a null pointer"),
                       ({"out": 0}, "'out' is a null pointer"), ({"device": -1}, "'device'")):  # fmt: skip
        with pytest.raises(ValueError, match=word):
            mod.info_nce_forward(**{**good, **over})
    bgood = {k: v for k, v in good.items() if k != "out"}
    bgood.update(grad=1, da=1, db=1)
    for over, word in (({"grad": 0}, "'grad'"), ({"db": 0}, "'db'"), ({"P": -1}, "'P'")):
        with pytest.raises(ValueError, match=word):
            mod.info_nce_backward(**{**bgood, **over})


def test_impls_report_the_emulated_module():
    if not cuda_emulated():
        pytest.skip("needs the emulated CUDA module")
    from mclner.ops import available_impls

    status = available_impls()["cuda"]
    assert status["runnable"] and "emulated CUDA module (HIP-CPU) on the CPU" in status["reason"]
    x = {k: torch.randn(*s) for k, s in (("hs", (1, 3, 4)), ("he", (1, 3, 4)), ("U", (2, 4, 4)),
                                         ("W", (2, 8)), ("b", (2,)))}  # fmt: skip
    with pytest.raises(RuntimeError, match="float64"):  # the CUDA dtypes still apply
        biaffine(**{k: v.double() for k, v in x.items()}, impl="cuda")
    assert biaffine(**x, impl="cuda").shape == (1, 3, 3, 2)
