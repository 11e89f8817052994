"""Roofline of the fused ops at the GPU benchmark sizes: work, traffic and the lower-bound time.

For each benchmark case (``GPU_CASES``, also the GPU sizes of benchmarks/bench_ops.py) ``work`` counts,
for forward + backward:

* ``flops``: matrix-product FLOPs of the cheapest algorithm of the fused ops' class, which never stores
  an O(M²) or O(B·N²·H) intermediate and so recomputes the logits (pre-activations) once in the
  backward. info_nce: 2·M²·P forward, 2·M²·P recompute + 4·M²·P for the two gradients = 8·M²·P.
  sup_con (one set): the same, but one backward product serves both terms (the logits are symmetric):
  6·M²·P. cln_head: forward 2·p·H·(D + C) with p = B·N² pairs; backward recompute 2·p·D·H plus
  4·p·H·(D + C). biaffine: no recompute, 3 × forward (forward 2·B·N·C·Db² + 2·B·N²·C·Db).
* ``flops_executed``: what the Triton kernels execute (info_nce's backward sweeps rows and columns in
  two launches, each recomputing the logits: 10·M²·P; cln_head's forward and backward both follow the
  class minimum; the rest as above).
* ``exps``: exponentials the class needs (one per logit forward; backward one per logit and loss
  term: info_nce 1, sup_con 2 for its row and column terms). They run on the special-function units
  (MUFU, 16 per clock per SM on sm_80/sm_90), which at P = 128 is as tight a limit as the tensor cores.
* ``bytes``: device-memory traffic of inputs, outputs and gradients at the storage dtype (the fused
  ops keep everything else on chip; the torch prologues are counted by their outputs).

The bound is max(flops / tensor rate, exps / MUFU rate, bytes / HBM bandwidth) on the datasheet
figures of ``DEVICES`` (dense, without sparsity; clocks at boost). fp32 inputs run on the FP32 SIMT
units (the Triton kernels multiply fp32 tiles in IEEE precision, never TF32; the CUDA kernels always
use SIMT FMAs), so ``bound(..., simt=True)`` uses the FP32 rate instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional


@dataclass(frozen=True)
class Device:
    name: str
    tensor_tflops: float  # dense bf16/fp16 tensor-core rate, fp32 accumulation
    fp32_tflops: float  # non-tensor FP32 (FMA = 2 FLOPs)
    hbm_tbps: float  # device-memory bandwidth, TB/s
    sms: int
    boost_ghz: float

    @property
    def exp_per_s(self) -> float:
        return self.sms * 16 * self.boost_ghz * 1e9  # MUFU ex2: 16 per clock per SM


# NVIDIA datasheets (H100 SXM5 80 GB, H100 PCIe 80 GB, H200 SXM 141 GB).
DEVICES = {
    "H100 SXM": Device("H100 SXM", 989.4, 66.9, 3.35, 132, 1.98),
    "H100 PCIe": Device("H100 PCIe", 756.0, 51.2, 2.0, 114, 1.755),
    "H200 SXM": Device("H200 SXM", 989.4, 66.9, 4.8, 132, 1.98),
}


def device_for(name: str) -> Device:
    """The DEVICES entry for a torch device name (e.g. 'NVIDIA H100 80GB HBM3')."""
    n = name.upper()
    if "H200" in n:
        return DEVICES["H200 SXM"]
    if "H100" in n and "PCIE" in n:
        return DEVICES["H100 PCIe"]
    return DEVICES["H100 SXM"]


@dataclass(frozen=True)
class Case:
    op: str
    shape: tuple  # ((name, value), ...)

    def dims(self) -> dict:
        return dict(self.shape)


def _case(op: str, **shape) -> Case:
    return Case(op, tuple(shape.items()))


# The GPU benchmark cases (benchmarks/bench_ops.py builds its GPU sizes from these).
GPU_CASES = {
    "cln_head B32 N128 D768 H256 C6": _case("cln_head", B=32, N=128, D=768, H=256, C=6),
    "cln_head B8 N512 D768 H256 C6": _case("cln_head", B=8, N=512, D=768, H=256, C=6),
    "biaffine B32 N128 Db512 C6": _case("biaffine", B=32, N=128, Db=512, C=6),
    "info_nce M65536 P128": _case("info_nce", M=65536, P=128),
    "info_nce M131072 P128": _case("info_nce", M=131072, P=128),
    "sup_con lcl M65536 P128 10 classes": _case("sup_con", M=65536, N=65536, P=128, one_set=True),
    "sup_con tcl M65536 P128 M/2 pairs": _case("sup_con", M=65536, N=65536, P=128, one_set=True),
    "sup_con lcl M131072 P128 10 classes": _case("sup_con", M=131072, N=131072, P=128, one_set=True),
    "sup_con tcl M131072 P128 M/2 pairs": _case("sup_con", M=131072, N=131072, P=128, one_set=True),
}


@dataclass(frozen=True)
class Work:
    flops: float
    flops_executed: float
    exps: float
    bytes: float


def work(op: str, dims: dict, itemsize: int = 2) -> Work:
    """Forward + backward work of `op` at `dims` with inputs stored in `itemsize` bytes."""
    s = itemsize
    if op == "info_nce":  # asymmetric (the benchmark's form)
        M, P = dims["M"], dims["P"]
        mm = M * M * P
        # za, zb read (forward, backward), dza, dzb written: 6·M·P elements.
        return Work(8 * mm, 10 * mm, 2 * M * M, 6 * M * P * s)
    if op == "sup_con":
        M, N, P = dims["M"], dims["N"], dims["P"]
        mn = M * N * P
        return Work(6 * mn, 6 * mn, 3 * M * N, 3 * (M + N) * P * s)
    if op == "cln_head":
        B, N, D, H, C = (dims[k] for k in "BNDHC")
        p = B * N * N
        fwd = 2 * p * H * (D + C)
        bwd = 2 * p * D * H + 4 * p * H * (D + C)
        # fp32 per-word tensors γ, n, u read twice and their gradients written; S written, dS read.
        words = (2 * B * N * D + B * N * H) * 4
        return Work(fwd + bwd, fwd + bwd, 0, 3 * words + 2 * p * C * s)
    if op == "biaffine":
        B, N, Db, C = (dims[k] for k in ("B", "N", "Db", "C"))
        fwd = 2 * B * N * C * Db * Db + 2 * B * N * N * C * Db
        # hs, he, U read twice and their gradients written; P = hs·U (B·N·C·Db) written, read twice;
        # S written, dS read twice (dP and dhe).
        io = 3 * (2 * B * N * Db + C * Db * Db) * s + 3 * B * N * C * Db * s + 3 * B * N * N * C * s
        return Work(3 * fwd, 3 * fwd, 0, io)
    raise ValueError(f"unknown op {op!r}")


@dataclass(frozen=True)
class Bound:
    seconds: float
    limit: str  # which ceiling binds: "tensor", "fp32", "exp" or "memory"
    terms: dict


def bound(w: Work, device: Device, simt: bool = False) -> Bound:
    """Lower-bound time of work `w` on `device` (SIMT FP32 rate instead of tensor cores if `simt`)."""
    rate = device.fp32_tflops if simt else device.tensor_tflops
    terms = {
        "fp32" if simt else "tensor": w.flops / (rate * 1e12),
        "exp": w.exps / device.exp_per_s,
        "memory": w.bytes / (device.hbm_tbps * 1e12),
    }
    limit = max(terms, key=terms.get)
    return Bound(terms[limit], limit, terms)


def _fmt_s(s: float) -> str:
    return f"{s * 1e3:.2f} ms" if s >= 1e-3 else f"{s * 1e6:.0f} µs"


def cells(op: str, dims: dict) -> int:
    """The size the op's quadratic work scales with: B·N² pairs (relation ops), M·N logits (losses)."""
    if op in ("cln_head", "biaffine"):
        return dims["B"] * dims["N"] ** 2
    return dims["M"] * dims.get("N", dims["M"])


def table(devices: Optional[list] = None, itemsize: int = 2) -> str:
    """Markdown table of every GPU case: work, traffic and the bound per device (bf16 by default)."""
    devices = devices or [DEVICES["H100 SXM"], DEVICES["H200 SXM"]]
    head = ["case", "cells", "GFLOP (class min)", "GFLOP (Triton executes)", "G exp", "MB moved"]
    head += [f"bound {d.name}: max(tensor, exp, memory)" for d in devices]
    head += [f"executed work, {devices[0].name}"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, c in GPU_CASES.items():
        w = work(c.op, c.dims(), itemsize)
        row = [name, f"{cells(c.op, c.dims()):,}", f"{w.flops / 1e9:,.0f}", f"{w.flops_executed / 1e9:,.0f}",
               f"{w.exps / 1e9:.1f}", f"{w.bytes / 1e6:,.0f}"]
        for d in devices:
            b = bound(w, d)
            t = b.terms
            row.append(f"**{_fmt_s(b.seconds)}** ({_fmt_s(t['tensor'])}, {_fmt_s(t['exp'])}, {_fmt_s(t['memory'])})")
        executed = Work(w.flops_executed, w.flops_executed, w.exps, w.bytes)
        row.append(_fmt_s(bound(executed, devices[0]).seconds))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def figures() -> str:
    """The device figures the bounds use."""
    lines = ["| device | bf16 dense tensor | fp32 SIMT | HBM | SMs × boost clock | exp (MUFU) |",
             "|---|---|---|---|---|---|"]
    for d in DEVICES.values():
        lines.append(f"| {d.name} | {d.tensor_tflops:g} TFLOP/s | {d.fp32_tflops:g} TFLOP/s | {d.hbm_tbps:g} TB/s | "
                     f"{d.sms} × {d.boost_ghz:g} GHz | {d.exp_per_s / 1e12:.2f} T/s |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(figures())
    print()
    print(table())
