"""Native sup_con kernels: argument validation in C++, ISA copies, strides, threads, memory."""

import subprocess
import sys
import textwrap

import pytest
import torch
from mclner_helpers import NEUTRAL_CWD, subprocess_env
from test_op_sup_con import make_inputs

from mclner import _native
from mclner.ops import sup_con, sup_con_reference

C = _native.cpu_module()
pytestmark = pytest.mark.skipif(C is None, reason=f"native CPU module not built: {_native.cpu_error()}")


def _forward_args(**over):
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randn(3, 4, dtype=torch.float64)
    lx = torch.tensor([0, 1, 0, -1, 1], dtype=torch.int32)
    ly = torch.tensor([1, 0, 2], dtype=torch.int32)
    lse, pos, cnt = (torch.empty(5, dtype=torch.float64) for _ in range(3))
    args = dict(x=x.data_ptr(), ldx=4, y=y.data_ptr(), ldy=4, M=5, N=3, P=4, dtype=1, temperature=0.1,
                one_set=False, lab_x=lx.data_ptr(), lab_y=ly.data_ptr(), lse=lse.data_ptr(), pos=pos.data_ptr(),
                cnt=cnt.data_ptr(), num_threads=1)
    args.update(over)
    return args, (x, y, lx, ly, lse, pos, cnt)


@pytest.mark.parametrize(
    "over, words",
    [
        (dict(x=0), ["'x'", "null"]),
        (dict(y=0), ["'y'", "null"]),
        (dict(lab_x=0), ["'lab_x'", "null"]),
        (dict(lab_y=0), ["'lab_y'", "null"]),
        (dict(M=0), ["'M'", "positive"]),
        (dict(N=-1), ["'N'", "positive"]),
        (dict(P=0), ["'P'", "positive"]),
        (dict(ldx=3), ["'ldx'"]),
        (dict(ldy=2), ["'ldy'"]),
        (dict(one_set=True), ["one-set", "N == M"]),
        (dict(dtype=3), ["'dtype'", "bfloat16"]),
        (dict(dtype=7), ["'dtype'"]),
        (dict(temperature=0.0), ["'temperature'", "positive"]),
        (dict(temperature=float("nan")), ["'temperature'", "finite"]),
        (dict(lse=0), ["'lse'", "null"]),
        (dict(pos=0), ["'pos'", "null"]),
        (dict(cnt=0), ["'cnt'", "null"]),
        (dict(num_threads=0), ["'num_threads'"]),
        (dict(isa=5), ["'isa'"]),
    ],
)
def test_native_forward_validation(over, words):
    args, keep = _forward_args(**over)
    with pytest.raises(ValueError) as info:
        C.sup_con_forward(**args)
    msg = str(info.value)
    assert msg.startswith("sup_con:")
    for w in words:
        assert w in msg


@pytest.mark.parametrize("arg", ["w_x", "c_x", "lse_x", "w_y", "c_y", "lse_y", "dx"])
def test_native_backward_null_pointers(arg):
    t = torch.zeros(16, dtype=torch.float32)
    lab = torch.zeros(4, dtype=torch.int32)
    p = t.data_ptr()
    args = dict(x=p, ldx=4, y=p, ldy=4, M=4, N=4, P=4, dtype=0, temperature=0.1, one_set=False,
                lab_x=lab.data_ptr(), lab_y=lab.data_ptr(), row_terms=True, col_terms=True, w_x=p, c_x=p, lse_x=p,
                w_y=p, c_y=p, lse_y=p, dx=p, num_threads=1)
    args[arg] = 0
    with pytest.raises(ValueError, match=f"sup_con: argument '{arg}' is a null pointer"):
        C.sup_con_backward(**args)


def test_native_backward_needs_a_term():
    t = torch.zeros(16, dtype=torch.float32)
    lab = torch.zeros(4, dtype=torch.int32)
    p = t.data_ptr()
    with pytest.raises(ValueError, match="row_terms"):
        C.sup_con_backward(p, 4, p, 4, 4, 4, 4, 0, 0.1, False, lab.data_ptr(), lab.data_ptr(), False, False,
                           0, 0, 0, 0, 0, 0, p, 1)


def _check_against_reference(x, **kw):
    feats = {k: v for k, v in x.items() if k in ("z", "z2")}
    fixed = {k: v for k, v in x.items() if k not in feats}
    xs = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    ys = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    got = sup_con(**xs, **fixed, **kw, impl="cpu")
    want = sup_con_reference(**ys, **fixed, **kw)
    g = torch.randn(got.shape, dtype=got.dtype, generator=torch.Generator().manual_seed(3))
    got.backward(g)
    want.backward(g)
    tol = dict(atol=1e-10, rtol=1e-9) if got.dtype == torch.float64 else dict(atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got, want, **tol)
    for k in xs:
        torch.testing.assert_close(xs[k].grad, ys[k].grad, **tol)


@pytest.mark.parametrize("isa", ["avx2", "generic"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_isa_copies_agree(isa, dtype, monkeypatch):
    """The portable and AVX2 copies of the tile pipeline (read per call from MCLNER_CPU_ISA)."""
    monkeypatch.setenv("MCLNER_CPU_ISA", isa)
    if C.cpu_isa() != isa:
        pytest.skip(f"this CPU cannot run the {isa} copy (best: {C.cpu_best_isa()})")
    for m2 in (0, 270):
        x = make_inputs(300, m2, 37, dtype=dtype, classes=6)
        _check_against_reference(x, temperature=0.2, reduction="none")


def test_several_tiles_both_forms():
    """M and M2 spanning several row and column tiles with ragged tails, one and two sets."""
    for m2 in (0, 513):
        x = make_inputs(600, m2, 20, classes=9)
        _check_against_reference(x, temperature=0.1, reduction="mean")


def _run(x, threads):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        feats = {k: v.clone().requires_grad_(True) for k, v in x.items() if k in ("z", "z2")}
        fixed = {k: v for k, v in x.items() if k not in feats}
        loss = sup_con(**feats, **fixed, temperature=0.05, reduction="sum", impl="cpu")
        loss.backward()
        return [loss.detach()] + [v.grad for v in feats.values()]
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("m2", [0, 300])
def test_results_do_not_depend_on_threads(m2):
    """Every row tile is owned by one thread and reduced in a fixed order: bitwise equal results."""
    x = make_inputs(700, m2, 16, dtype=torch.float32, classes=5)
    one, two, three = (_run(x, n) for n in (1, 2, 3))
    for u, v, w in zip(one, two, three):
        assert torch.equal(u, v) and torch.equal(u, w)


def test_no_quadratic_memory():
    """Forward + backward at M = 8192 grows the peak RSS by far less than one M×M float32 matrix."""
    code = textwrap.dedent(
        """
        import resource, torch
        from mclner.ops import sup_con
        torch.set_num_threads(2)
        M, P = 8192, 32
        z = torch.randn(M, P, requires_grad=True)
        labels = torch.randint(0, 10, (M,))
        sup_con(z[:8].detach().requires_grad_(), labels[:8], impl="cpu").backward()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        sup_con(z, labels, impl="cpu").backward()
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024)
        """
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=600,
        cwd=NEUTRAL_CWD,
    )
    assert res.returncode == 0, res.stderr
    grown = int(res.stdout.strip().splitlines()[-1])
    quadratic = 8192 * 8192 * 4  # 256 MiB
    assert grown < quadratic / 8, f"peak RSS grew by {grown / 2**20:.1f} MiB"


@pytest.mark.parametrize("arg", ["x", "y", "lab_x", "lab_y", "lse", "pos", "cnt"])
def test_cuda_binding_validates_before_launch(arg):
    """The CUDA module checks its arguments on the host (no device needed to reach the error)."""
    mod = _native.cuda_module()
    if mod is None:
        pytest.skip(f"CUDA module not built: {_native.cuda_error()}")
    args = dict(x=16, ldx=4, y=32, ldy=4, M=4, N=4, P=4, dtype=0, temperature=0.1, one_set=False, lab_x=48,
                lab_y=64, lse=80, pos=96, cnt=112, device=0, stream=0)
    args[arg] = 0
    with pytest.raises(ValueError, match=f"sup_con: argument '{arg}' is a null pointer"):
        mod.sup_con_forward(**args)
    with pytest.raises(ValueError, match="'dtype'.*float64"):
        mod.sup_con_forward(**dict(args, **{arg: 8}, dtype=1))
