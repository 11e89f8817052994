"""The GPU kernels fit the GPU, checked without one (mclner.kernels._resources, scripts/gpu_resources.py).

Every Triton kernel of every op, forward and backward, with the configuration its launcher picks at the
GPU benchmark shapes, compiles for sm_80 and sm_90 the way Triton's JIT would (frontend, TritonGPU
passes, PTX, ptxas), uses tensor-core instructions in 16-bit dtypes, does not spill (stack 0) and fits
the architecture's shared memory; the built CUDA module's kernels are held to the same check. The
table (one row per kernel x dtype x arch x configuration) is printed. The focused list here keeps the
suite's added time low; the full sweep (fp16 everywhere, every autotune candidate, training shapes) is
`python scripts/gpu_resources.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from mclner_helpers import NEUTRAL_CWD, subprocess_env

# Every kernel of every op: the check must have compiled each of them.
KERNELS = {
    "biaffine": {"_biaffine_fwd_kernel", "_biaffine_bwd_dp_kernel", "_biaffine_bwd_dhe_kernel"},
    "cln_head": {"_cln_grid_fwd_kernel", "_cln_grid_bwd_kernel"},
    "info_nce": {"_nce_lse_kernel", "_nce_bwd_kernel"},
    "sup_con": {"_sc_stats_kernel", "_sc_bwd_kernel"},
}


def _nvidia_backend() -> None:
    pytest.importorskip("triton")
    import triton.backends

    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("this Triton has no NVIDIA backend: the kernels cannot be compiled for a GPU here")


def _run(code_or_args: list, timeout: int = 600) -> subprocess.CompletedProcess:
    env = subprocess_env(TRITON_INTERPRET="0")
    return subprocess.run([sys.executable, *code_or_args], env=env, cwd=NEUTRAL_CWD, capture_output=True, text=True,
                          timeout=timeout)


def test_every_kernel_fits_sm80_and_sm90(tmp_path, capsys):
    _nvidia_backend()
    out = tmp_path / "rows.json"
    res = _run(["-m", "mclner.kernels._resources", "--ci", "--json", str(out), "--jobs", "2"])
    with capsys.disabled():  # the table belongs in the CI log
        print("\n" + res.stdout)
    assert out.exists(), res.stderr[-3000:]
    rows = json.loads(out.read_text())
    triton_rows = [r for r in rows if r["impl"] == "triton"]
    for op, names in KERNELS.items():
        for arch in (80, 90):
            for dtype in ("fp32", "bf16"):
                seen = {r["kernel"].split("[")[0] for r in triton_rows if (r["op"], r["arch"], r["dtype"]) ==
                        (op, arch, dtype)}
                assert seen == names, f"{op} {dtype} sm_{arch}: compiled {sorted(seen)}, expected {sorted(names)}"
    failing = [r for r in rows if not r["ok"]]
    assert not failing, "\n".join(f"{r['kernel']} {r['dtype']} sm_{r['arch']} {r['config']}: regs {r['regs']} "
                                  f"stack {r['stack']} smem {r['smem']} {r['error']}" for r in failing)
    assert res.returncode == 0, res.stderr[-3000:]
    if "no built _cuda module" in res.stderr:
        print("CUDA kernels not checked: no built _cuda module next to mclner")
    else:
        cuda = [r for r in rows if r["impl"] == "cuda"]
        assert {r["op"] for r in cuda} >= set(KERNELS), sorted({r["op"] for r in cuda})
        assert {r["arch"] for r in cuda} == {80, 90}


PRUNE = r"""
import torch, triton
import mclner
from mclner.kernels import _resources as R
from mclner.kernels._common import cfg

# info_nce's row LSE kernel in fp32 on sm_80: a 128-wide logit chunk spills; the default does not.
ln = R.op_launches("info_nce", {"M": 4096, "P": 128}, torch.float32, 80)[0]
good, bad = ln.configs[0], cfg(4, 2, BLOCK_O=64, BLOCK_T=64, BLOCK_K=128)
configs = [triton.Config({k: v for k, v in c.items() if not k.startswith("num_")}, num_warps=c["num_warps"],
                         num_stages=c["num_stages"]) for c in (bad, good)]
names = [p.name for p in ln.kernel.params if not p.is_constexpr]
# triton.autotune hands the prune the launch's grid and warmup flag among the keyword arguments.
kept = R.fitting_configs(ln.kernel, configs, dict(zip(names, ln.args)), {**ln.consts, "grid": (1,), "warmup": False},
                         80)
print([c.kwargs["BLOCK_K"] for c in kept])

# Every launcher's autotuner can be built: its key and reset_to_zero name arguments of the kernel.
from mclner.kernels._common import _tuner
for op, shape in (("info_nce", {"M": 4096, "P": 128}), ("sup_con", {"M": 4096, "N": 4096, "P": 128}),
                  ("biaffine", {"B": 2, "N": 64, "Db": 128, "C": 8}),
                  ("cln_head", {"B": 2, "N": 64, "D": 256, "H": 128, "C": 8})):
    for ln in R.op_launches(op, shape, torch.bfloat16, 90):
        tuner = _tuner(ln.kernel, ln.consts, ln.configs, ln.key, ln.reset)
        assert ln.key and set(ln.key) <= set(tuner.arg_names), (op, ln.key)
        assert set(ln.reset) <= set(tuner.arg_names), (op, ln.reset)
print("tuners ok")
"""


def test_autotune_prune_drops_spilling_configs():
    """The autotune candidates are pruned by the same compile and check: a spilling one is dropped; every
    launcher's triton.autotune wrapper builds (its key and reset names are kernel arguments)."""
    _nvidia_backend()
    res = _run(["-c", PRUNE])
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-2:] == ["[32]", "tuners ok"]


def test_resource_usage_parsing_and_limits():
    from mclner.kernels import _resources as R

    text = """
Fatbin elf code:
================
arch = sm_90
Resource usage:
 Common:
  GLOBAL:0
 Function _Z6kernelPf:
  REG:255 STACK:720 SHARED:1024 LOCAL:0 CONSTANT[0]:416 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    ((arch, name, u),) = R.parse_resource_usage(text)
    assert (arch, name, u["REG"], u["STACK"], u["SHARED"], u["CONSTANT[0]"]) == (90, "_Z6kernelPf", 255, 720, 1024, 416)
    assert R.problems(255, 720, 0, 1024, 90) == ["spills: stack 720 B"]
    assert R.problems(128, 0, 0, 227 * 1024, 90) == []
    assert R.problems(128, 0, 0, 227 * 1024, 80) == [f"shared memory {227 * 1024} B > {163 * 1024} B"]
