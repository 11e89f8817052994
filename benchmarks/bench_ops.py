"""pytest-benchmark suite for the fused ops: forward+backward, reference vs fused impls.

Run: pytest benchmarks --benchmark-only [--ratio-table ratios.md]
Columns: `reference` (pure PyTorch), `compiled` (torch.compile of the reference, CPU only: its peer on
the CPU), and every fused impl runnable here. CPU sizes are those of the build issue, in float32; on a
GPU the sizes of mclner.ops.roofline.GPU_CASES are added, in bfloat16 (MCLNER_BENCH_DTYPE overrides),
and the ratio table reports each time against the roofline bound of the device.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import record
from mclner_memory import cpu_peak_supported, peak_extra_bytes

from mclner.ops import (
    available_impls,
    biaffine,
    biaffine_reference,
    cln_head,
    cln_head_reference,
    info_nce,
    info_nce_reference,
    sup_con,
    sup_con_reference,
)
from mclner.ops.roofline import GPU_CASES

HAS_GPU = torch.cuda.is_available()
DEVICE = torch.device("cuda" if HAS_GPU else "cpu")
IMPLS = ["reference", "compiled", "cpu", "triton", "cuda"]
# The reference of each op, for the `compiled` column.
REFERENCES = {
    biaffine: biaffine_reference,
    cln_head: cln_head_reference,
    info_nce: info_nce_reference,
    sup_con: sup_con_reference,
}


def _runnable(impl: str) -> bool:
    if impl == "reference":
        return True
    if impl == "compiled":  # the CPU peer of the fused ops (on a GPU it would materialise M² as well)
        return not HAS_GPU
    if impl == "cpu":
        return not HAS_GPU and available_impls()["cpu"]["runnable"]
    return HAS_GPU and bool(available_impls()[impl]["runnable"])


def _dtype() -> torch.dtype:
    name = os.environ.get("MCLNER_BENCH_DTYPE", "bfloat16" if HAS_GPU else "float32")
    return getattr(torch, name)


def cln_inputs(B, N, D, H, C):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(DEVICE, _dtype())
    return [
        r(B, N, D),
        r(D, D, scale=D**-0.5),
        r(D),
        r(D, D, scale=D**-0.5),
        r(D),
        r(H, D, scale=D**-0.5),
        r(H),
        r(C, H, scale=H**-0.5),
        r(C),
    ]


def biaffine_inputs(B, N, Db, C):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(DEVICE, _dtype())
    return [r(B, N, Db), r(B, N, Db), r(C, Db, Db, scale=Db**-0.5), r(C, 2 * Db, scale=(2 * Db) ** -0.5), r(C)]


def nce_inputs(M, P):
    g = torch.Generator().manual_seed(0)
    za = torch.randn(M, P, generator=g)
    zb = 0.6 * za + 0.8 * torch.randn(M, P, generator=g)
    return [za.to(DEVICE, _dtype()), zb.to(DEVICE, _dtype())]


class SupConCase:
    """sup_con in its one-set form on z [M, P] with fixed labels (the op's only float input is z).

    lcl: ~10 label classes (token labels of a batch, label-wise contrastive loss); tcl: M/2 pair labels
    (each sentence and its translation share a label, sentence-level contrastive loss).
    """

    def __init__(self, M: int, P: int, kind: str):
        self.M, self.P, self.kind = M, P, kind
        self._labels = None

    def labels(self) -> torch.Tensor:
        if self._labels is None:
            g = torch.Generator().manual_seed(1)
            lab = torch.randint(0, 10, (self.M,), generator=g) if self.kind == "lcl" else torch.arange(self.M) // 2
            self._labels = lab.to(DEVICE)
        return self._labels

    def inputs(self):
        g = torch.Generator().manual_seed(0)
        return [torch.randn(self.M, self.P, generator=g).to(DEVICE, _dtype())]

    def __call__(self, z, **kwargs):
        return sup_con(z, self.labels(), **kwargs)

    def reference(self, z, **kwargs):
        return sup_con_reference(z, self.labels(), **kwargs)


def _sup_con_case(M, P, kind):
    c = SupConCase(M, P, kind)
    return _case(c, c.inputs, nce_flops(M, P), temperature=0.1)


# FLOPs of forward+backward, for the achieved-rate column. Convention: the matrix-product terms only;
# info_nce and sup_con count 2·M²·P forward and 4·M²·P backward (the GPU issue's rule); the pair-grid ops count
# their forward products and 2× that for the backward (the recompute in the fused backward is extra
# work and not credited).
def cln_flops(B, N, D, H, C):
    return 3 * 2 * B * N * N * H * (D + C)


def biaffine_flops(B, N, Db, C):
    return 3 * (2 * B * N * C * Db * Db + 2 * B * N * N * C * Db)


def nce_flops(M, P):
    return 6 * M * M * P


def _case(op, make, flops, **kwargs):
    return op, make, kwargs, flops


CASES = {
    "cln_head B8 N128 D384 H128 C6": _case(
        cln_head, lambda: cln_inputs(8, 128, 384, 128, 6), cln_flops(8, 128, 384, 128, 6)
    ),
    "info_nce M16384 P128": _case(info_nce, lambda: nce_inputs(16384, 128), nce_flops(16384, 128), temperature=0.1),
    "biaffine B8 N128 Db256 C6": _case(
        biaffine, lambda: biaffine_inputs(8, 128, 256, 6), biaffine_flops(8, 128, 256, 6)
    ),
    "sup_con lcl M16384 P128 10 classes": _sup_con_case(16384, 128, "lcl"),
    "sup_con tcl M16384 P128 M/2 pairs": _sup_con_case(16384, 128, "tcl"),
}


def _gpu_case(name: str):
    c = GPU_CASES[name]
    d = c.dims()
    if c.op == "cln_head":
        shape = (d["B"], d["N"], d["D"], d["H"], d["C"])
        return _case(cln_head, lambda: cln_inputs(*shape), cln_flops(*shape))
    if c.op == "biaffine":
        shape = (d["B"], d["N"], d["Db"], d["C"])
        return _case(biaffine, lambda: biaffine_inputs(*shape), biaffine_flops(*shape))
    if c.op == "info_nce":
        return _case(info_nce, lambda: nce_inputs(d["M"], d["P"]), nce_flops(d["M"], d["P"]), temperature=0.1)
    return _sup_con_case(d["M"], d["P"], "lcl" if " lcl " in name else "tcl")


if HAS_GPU:  # the GPU sizes only: the CPU ones are too small to say anything about a GPU
    CASES = {name: _gpu_case(name) for name in GPU_CASES}


def _sync():
    if HAS_GPU:
        torch.cuda.synchronize()


_COMPILED: dict = {}


def _compiled(op):
    """torch.compile of the op's reference (one compiled function per op, reused across cases)."""
    if op not in _COMPILED:
        ref = op.reference if isinstance(op, SupConCase) else REFERENCES[op]
        _COMPILED[op] = torch.compile(ref)
    return _COMPILED[op]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_op_forward_backward(benchmark, case, impl):
    if not _runnable(impl):
        pytest.skip(f"{impl} not runnable on {DEVICE}")
    if DEVICE.type == "cpu" and not cpu_peak_supported():
        pytest.skip("peak memory measurement needs /proc/self/clear_refs")
    op, make, kwargs, flops = CASES[case]
    inputs = [t.requires_grad_(True) for t in make()]
    fn = _compiled(op) if impl == "compiled" else lambda *a, **k: op(*a, **k, impl=impl)

    def step():
        for t in inputs:
            t.grad = None
        out = fn(*inputs, **kwargs)
        out.backward(torch.ones_like(out))
        _sync()

    try:
        step()  # warm-up (kernel compilation, autotuning, thread pools)
        mem = peak_extra_bytes(step, DEVICE)
    except torch.OutOfMemoryError:
        pytest.skip(f"{impl} runs out of memory at {case}")
    benchmark.extra_info.update(
        {"impl": impl, "case": case, "device": str(DEVICE), "peak_extra_bytes": mem, "flops": flops,
         "dtype": str(_dtype()).replace("torch.", "")}
    )
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=0)
    record(case, impl, benchmark.stats.stats.median, mem, flops)
