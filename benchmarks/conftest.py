"""Benchmarks: each op, forward+backward, reference and every fused impl runnable here, side by side.

Each result carries its peak extra memory in extra_info; at the end a ratio table (each impl against
the reference and against torch.compile of the reference, time and memory, measured in the same run;
on a GPU also against the roofline bound of mclner.ops.roofline) is printed and, with --ratio-table
PATH, written as Markdown. With MCLNER_TRITON_AUTOTUNE=1, --autotune-table PATH writes the
configuration each autotuned Triton kernel chose.
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
    parser.addoption("--autotune-table", default=None, help="write the Triton autotune choices (Markdown) here")


_PATHS: dict = {}


def pytest_configure(config):
    _PATHS["ratio"] = config.getoption("--ratio-table", default=None)
    _PATHS["autotune"] = config.getoption("--autotune-table", default=None)


def _write_tables() -> None:
    """(Re)write the tables asked for: after every case, so a run cut short keeps what it measured."""
    for key, make in (("ratio", ratio_table), ("autotune", autotune_table)):
        text = make() if _PATHS.get(key) and RESULTS else ""
        if text:
            with open(_PATHS[key], "w") as f:
                f.write(text + "\n")


def record(case: str, impl: str, seconds: float, mem: int, flops: float = 0.0) -> None:
    RESULTS[case][impl] = {"time": seconds, "mem": mem, "flops": flops}
    _write_tables()


def _fmt_mem(b: float) -> str:
    return f"{b / 2**20:.1f} MiB" if b < 2**30 else f"{b / 2**30:.2f} GiB"


def _bound_cells(case: str, seconds: float) -> list:
    """Roofline bound of the case on this GPU and the share of it reached ("% of bound")."""
    from mclner.ops import roofline

    c = roofline.GPU_CASES.get(case)
    if c is None or not torch.cuda.is_available():
        return ["n/a", "n/a"]
    import bench_ops

    itemsize = torch.empty((), dtype=bench_ops._dtype()).element_size()
    device = roofline.device_for(torch.cuda.get_device_name())
    b = roofline.bound(roofline.work(c.op, c.dims(), itemsize), device, simt=itemsize == 4)
    return [f"{b.seconds * 1e3:.2f} ms ({b.limit}, {device.name})", f"{100 * b.seconds / seconds:.0f}%"]


def ratio_table() -> str:
    gpu = torch.cuda.is_available()
    head = ["case", "impl", "time (median)", "TFLOP/s", "peak extra memory", "time / reference",
            "memory / reference", "time / compiled", "memory / compiled"]
    if gpu:
        head += ["roofline bound", "% of bound"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, impls in RESULTS.items():
        ref, comp = impls.get("reference"), impls.get("compiled")
        for impl, r in impls.items():
            t_ratio = f"{r['time'] / ref['time']:.2f}x" if ref else "n/a"
            m_ratio = f"{r['mem'] / ref['mem']:.3f}x" if ref and ref["mem"] > 0 else "n/a"
            tc_ratio = f"{r['time'] / comp['time']:.2f}x" if comp else "n/a"
            mc_ratio = f"{r['mem'] / comp['mem']:.3f}x" if comp and comp["mem"] > 0 else "n/a"
            rate = f"{r['flops'] / r['time'] / 1e12:.3f}" if r.get("flops") else "n/a"
            cells = [case, impl, f"{r['time'] * 1e3:.1f} ms", rate, _fmt_mem(r["mem"]), t_ratio, m_ratio,
                     tc_ratio, mc_ratio]
            if gpu:
                cells += _bound_cells(case, r["time"])
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def autotune_table() -> str:
    """The configuration every autotuned Triton kernel chose in this run."""
    try:
        from mclner.kernels._common import tuned_configs
    except ImportError:
        return ""
    rows = tuned_configs()
    if not rows:
        return ""
    lines = ["| kernel | key (shape args, dtypes) | chosen configuration |", "|---|---|---|"]
    for name, key, config in rows:
        lines.append(f"| {name} | {key} | {config} |")
    return "\n".join(lines)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not RESULTS:
        return
    terminalreporter.section("mclner: fused vs reference (same run)")
    terminalreporter.write_line(ratio_table())
    tuned = autotune_table()
    if tuned:
        terminalreporter.section("mclner: Triton autotune choices")
        terminalreporter.write_line(tuned)
    _write_tables()
