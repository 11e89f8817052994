"""Benchmarks: each op, forward+backward, reference and every fused impl runnable here, side by side.

Each result carries its peak extra memory in extra_info; at the end a ratio table (fused / reference,
time and memory, measured in the same run) is printed and, with --ratio-table PATH, written as
Markdown.
"""

from __future__ import annotations

import os
from collections import defaultdict

import torch

if not torch.cuda.is_available():
    # Triton kernels on the CPU only run under the interpreter: far too slow to time meaningfully.
    os.environ.setdefault("TRITON_INTERPRET", "0")

RESULTS: dict = defaultdict(dict)  # case -> impl -> {"time": s, "mem": bytes}


def pytest_addoption(parser):
    parser.addoption("--ratio-table", default=None, help="write the fused/reference ratio table (Markdown) here")


def record(case: str, impl: str, seconds: float, mem: int, flops: float = 0.0) -> None:
    RESULTS[case][impl] = {"time": seconds, "mem": mem, "flops": flops}


def _fmt_mem(b: float) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def ratio_table() -> str:
    lines = [
        "| case | impl | time (median) | TFLOP/s | peak extra memory | time / reference | memory / reference |",
        "|---|---|---|---|---|---|---|",
    ]
    for case, impls in RESULTS.items():
        ref = impls.get("reference")
        for impl, r in impls.items():
            t_ratio = f"{r['time'] / ref['time']:.2f}x" if ref else "n/a"
            m_ratio = f"{r['mem'] / ref['mem']:.3f}x" if ref and ref["mem"] > 0 else "n/a"
            rate = f"{r['flops'] / r['time'] / 1e12:.3f}" if r.get("flops") else "n/a"
            cells = [case, impl, f"{r['time'] * 1e3:.1f} ms", rate, _fmt_mem(r["mem"]), t_ratio, m_ratio]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    table = ratio_table()
    terminalreporter.section("mclner: fused vs reference (same run)")
    terminalreporter.write_line(table)
    path = config.getoption("--ratio-table")
    if path:
        with open(path, "w") as f:
            f.write(table + "\n")
