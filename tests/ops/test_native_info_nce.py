"""Native info_nce kernels: argument validation in C++, ISA copies, strides, threads, memory."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from mclner_helpers import NEUTRAL_CWD, subprocess_env

from mclner import _native
from mclner.ops import info_nce, info_nce_reference

C = _native.cpu_module()
pytestmark = pytest.mark.skipif(C is None, reason=f"native CPU module not built: {_native.cpu_error()}")


def _inputs(M, P, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    za = torch.randn(M, P, generator=g, dtype=torch.float64)
    zb = 0.6 * za + 0.8 * torch.randn(M, P, generator=g, dtype=torch.float64)
    return za.to(dtype), zb.to(dtype)


def _forward_args(**over):
    a = torch.randn(5, 4, dtype=torch.float64)
    b = torch.randn(5, 4, dtype=torch.float64)
    out, rl, cl = (torch.empty(n, dtype=torch.float64) for n in (1, 5, 5))
    args = dict(a=a.data_ptr(), lda=4, b=b.data_ptr(), ldb=4, M=5, P=4, dtype=1, temperature=0.1, symmetric=True,
                reduction=0, out=out.data_ptr(), row_lse=rl.data_ptr(), col_lse=cl.data_ptr(), num_threads=1)
    args.update(over)
    return args, (a, b, out, rl, cl)


@pytest.mark.parametrize(
    "over, words",
    [
        (dict(a=0), ["'a'", "null"]),
        (dict(b=0), ["'b'", "null"]),
        (dict(M=0), ["'M'", "positive"]),
        (dict(P=-1), ["'P'", "positive"]),
        (dict(lda=3), ["'lda'"]),
        (dict(dtype=3), ["'dtype'", "bfloat16"]),
        (dict(dtype=7), ["'dtype'"]),
        (dict(temperature=0.0), ["'temperature'", "positive"]),
        (dict(temperature=float("nan")), ["'temperature'", "finite"]),
        (dict(temperature=float("inf")), ["'temperature'", "finite"]),
        (dict(reduction=3), ["'reduction'"]),
        (dict(col_lse=0), ["'col_lse'", "null"]),
        (dict(out=0), ["'out'", "null"]),
        (dict(num_threads=0), ["'num_threads'"]),
    ],
)
def test_native_forward_validation(over, words):
    args, keep = _forward_args(**over)
    with pytest.raises(ValueError) as info:
        C.info_nce_forward(**args)
    msg = str(info.value)
    assert msg.startswith("info_nce:")
    for w in words:
        assert w in msg


@pytest.mark.parametrize("arg", ["grad", "row_lse", "da", "db"])
def test_native_backward_null_pointers(arg):
    t = torch.zeros(16, dtype=torch.float32)
    args = dict(a=t.data_ptr(), lda=4, b=t.data_ptr(), ldb=4, M=4, P=4, dtype=0, temperature=0.1, symmetric=False,
                reduction=1, grad=t.data_ptr(), row_lse=t.data_ptr(), col_lse=0, da=t.data_ptr(), db=t.data_ptr(),
                num_threads=1)
    args[arg] = 0
    with pytest.raises(ValueError, match=f"info_nce: argument '{arg}' is a null pointer"):
        C.info_nce_backward(**args)


def _check_against_reference(za, zb, **kw):
    xs = [t.clone().requires_grad_(True) for t in (za, zb)]
    ys = [t.clone().requires_grad_(True) for t in (za, zb)]
    got = info_nce(*xs, **kw, impl="cpu")
    want = info_nce_reference(*ys, **kw)
    g = torch.randn(got.shape, dtype=got.dtype, generator=torch.Generator().manual_seed(3))
    got.backward(g)
    want.backward(g)
    tol = dict(atol=1e-10, rtol=1e-9) if za.dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got, want, **tol)
    for x, y in zip(xs, ys):
        torch.testing.assert_close(x.grad, y.grad, **tol)


@pytest.mark.parametrize("isa", ["avx2", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_isa_copies_agree(isa, dtype, monkeypatch):
    """The generic and AVX2 copies of the tile pipeline (MCLNER_CPU_ISA caps the ISA, read per call)."""
    monkeypatch.setenv("MCLNER_CPU_ISA", isa)
    if C.cpu_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} copy (best: {C.cpu_best_isa()})")
    za, zb = _inputs(300, 37, dtype)
    for symmetric in (False, True):
        _check_against_reference(za, zb, temperature=0.2, symmetric=symmetric, reduction="none")


def test_row_strided_inputs_are_used_in_place():
    wide_a, wide_b = _inputs(70, 20)
    za, zb = wide_a[:, 3:13], wide_b[:, 5:15]  # row stride 20, unit column stride
    assert not za.is_contiguous()
    _check_against_reference(za, zb, temperature=0.1, symmetric=True, reduction="mean")


def test_threads_agree():
    za, zb = _inputs(513, 16, torch.float32)
    before = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            x = [t.clone().requires_grad_(True) for t in (za, zb)]
            loss = info_nce(*x, temperature=0.05, symmetric=True, impl="cpu")
            loss.backward()
            results.append((loss.detach(), x[0].grad, x[1].grad))
    finally:
        torch.set_num_threads(before)
    for u, v in zip(*results):
        torch.testing.assert_close(u, v, atol=1e-6, rtol=1e-5)


def test_large_logits_and_all_equal_rows_stay_finite():
    za = torch.ones(200, 8, dtype=torch.float32)  # every logit equal: lse = log M + 1/τ
    zb = torch.ones(200, 8, dtype=torch.float32)
    for tau, atol in ((1e-4, 2e-3), (1.0, 1e-5)):  # logits ~1e4: float32 spacing there is ~1e-3
        got = info_nce(za, zb, temperature=tau, symmetric=True, reduction="none", impl="cpu")
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, torch.full((200,), float(torch.log(torch.tensor(200.0)))), atol=atol, rtol=0)


def test_no_quadratic_memory():
    """Forward + backward at M = 8192 grows the peak RSS by far less than one M×M float32 matrix."""
    code = textwrap.dedent(
        """
        import resource, torch
        from mclner.ops import info_nce
        torch.set_num_threads(2)
        M, P = 8192, 32
        za = torch.randn(M, P, requires_grad=True); zb = torch.randn(M, P, requires_grad=True)
        info_nce(za[:8].detach().requires_grad_(), zb[:8].detach().requires_grad_(), impl="cpu").backward()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        info_nce(za, zb, symmetric=True, impl="cpu").backward()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
        """
    )
    env = subprocess_env()
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, cwd=NEUTRAL_CWD
    )
    assert res.returncode == 0, res.stderr
    grown = int(res.stdout.strip().splitlines()[-1])
    quadratic = 8192 * 8192 * 4  # 256 MiB
    assert grown < quadratic / 8, f"peak RSS grew by {grown / 2**20:.1f} MiB"


def test_normalisation_matches_torch_for_zero_rows():
    za, zb = _inputs(20, 6, torch.float64)
    za[4] = 0.0
    zb[7] = 0.0
    _check_against_reference(za, zb, temperature=0.3, symmetric=True, reduction="sum")
    a = F.normalize(za, dim=-1, eps=1e-12)
    assert torch.all(a[4] == 0)
