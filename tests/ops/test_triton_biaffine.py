"""Triton biaffine: block-boundary shapes with small forced tiles, fp64 exactness, half precisions."""

import importlib

import pytest
import torch
from mclner_helpers import NEUTRAL_CWD, compare_to_reference, impl_device, subprocess_env
from test_op_biaffine import make_inputs

from mclner.ops import biaffine, biaffine_reference

kb = importlib.import_module("mclner.kernels.biaffine")

# N·C, N and Db straddle the forced 16-wide tiles (several tiles, ragged tails, Db > one K chunk).
BOUNDARY_SHAPES = [(1, 1, 5, 3), (2, 16, 16, 1), (1, 17, 33, 5), (1, 20, 40, 2), (1, 7, 17, 3)]


@pytest.fixture
def small_tiles(monkeypatch):
    monkeypatch.setattr(kb, "_blocks", lambda NC, N, Db: (16, 16, 16))


def _device():
    return impl_device("triton")


@pytest.mark.parametrize("shape", BOUNDARY_SHAPES, ids=lambda s: "B{}N{}Db{}C{}".format(*s))
def test_small_tiles_fp32(small_tiles, shape):
    device = _device()
    compare_to_reference(
        lambda **k: biaffine(**k, impl="triton"),
        biaffine_reference,
        make_inputs(*shape, device=device),
        torch.float32,
        atol=1e-4,
    )


@pytest.mark.parametrize("shape", BOUNDARY_SHAPES[1:4], ids=lambda s: "B{}N{}Db{}C{}".format(*s))
def test_fp64_tight(shape):
    device = _device()
    if device.type == "cuda":
        pytest.skip("fp64 is checked in the interpreter, where it is exact numpy arithmetic")
    compare_to_reference(
        lambda **k: biaffine(**k, impl="triton"),
        biaffine_reference,
        make_inputs(*shape, device=device),
        torch.float64,
        atol=1e-10,
    )


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precisions(dtype):
    """bf16/fp16 tiles (fp32 accumulation) are at least as accurate as the same-precision reference."""
    device = _device()
    compare_to_reference(
        lambda **k: biaffine(**k, impl="triton"),
        biaffine_reference,
        make_inputs(2, 19, 24, 5, device=device),
        dtype,
        atol=1e-2,
    )


def test_non_contiguous_inputs():
    device = _device()
    x = make_inputs(2, 9, 12, 3, device=device, dtype=torch.float32)
    hs_t = x["hs"].transpose(0, 1).contiguous().transpose(0, 1)  # same values, non-contiguous
    U_t = x["U"].transpose(1, 2).contiguous().transpose(1, 2)
    assert not hs_t.is_contiguous() and not U_t.is_contiguous()
    got = biaffine(hs_t, x["he"], U_t, x["W"], x["b"], impl="triton")
    want = biaffine_reference(**x)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


# Compiles the kernels for a GPU target without a GPU (frontend, TritonGPU passes, PTX, ptxas): GPU-only
# compile errors (dot shapes/dtypes, layouts) surface on CPU-only machines. It runs in a subprocess
# because under TRITON_INTERPRET=1 the kernels are interpreter objects that cannot be compiled.
AOT_SCRIPT = r"""
import importlib, json, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import mclner  # noqa: F401  (maps mclner.kernels onto kernels/ in a source checkout)

spec = json.loads(sys.argv[1])
mod = importlib.import_module(spec["module"])
for k in spec["kernels"]:
    fn = getattr(mod, k["name"])
    consts = {n: getattr(triton.language, v[3:]) if isinstance(v, str) and v.startswith("tl.") else v
              for n, v in k["constexprs"].items()}
    sig = {p.name: "constexpr" if p.is_constexpr else k["types"].get(p.name, "i32") for p in fn.params}
    out = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                         target=GPUTarget("cuda", spec["arch"], 32), options={"num_warps": 4})
    assert "mma" in out.asm["ptx"], f"{k['name']}: no tensor-core instruction in the PTX"
    print(k["name"], "ok")
"""


def compile_for_gpu(module: str, kernels: list, arch: int = 90) -> str:
    """Compile `kernels` ([{name, types, constexprs}]) of `module` for sm_`arch`; returns stdout."""
    import json
    import subprocess
    import sys

    import triton.backends

    if "nvidia" not in getattr(triton.backends, "backends", {}):
        pytest.skip("this triton has no NVIDIA backend")
    env = subprocess_env(TRITON_INTERPRET="0")
    spec = json.dumps({"module": module, "arch": arch, "kernels": kernels})
    res = subprocess.run(
        [sys.executable, "-c", AOT_SCRIPT, spec], env=env, cwd=NEUTRAL_CWD, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_bf16_kernels_compile_for_sm90():
    common = {"ACC": "tl.float32", "UPCAST": False, "IEEE": False}
    bf, f32 = "*bf16", "*fp32"
    out = compile_for_gpu(
        "mclner.kernels.biaffine",
        [
            {
                "name": "_biaffine_fwd_kernel",
                "types": {"P_ptr": bf, "r_ptr": f32, "he_ptr": bf, "S_ptr": bf},
                "constexprs": {**common, "BLOCK_Q": 64, "BLOCK_J": 64, "BLOCK_K": 32},
            },
            {
                "name": "_biaffine_bwd_dp_kernel",
                "types": {"dS_ptr": bf, "he_ptr": bf, "dP_ptr": f32, "dr_ptr": f32},
                "constexprs": {**common, "BLOCK_Q": 64, "BLOCK_J": 64, "BLOCK_D": 32},
            },
            {
                "name": "_biaffine_bwd_dhe_kernel",
                "types": {"dS_ptr": bf, "P_ptr": bf, "dhe_ptr": f32},
                "constexprs": {**common, "BLOCK_J": 64, "BLOCK_Q": 64, "BLOCK_D": 32},
            },
        ],
    )
    assert out.count(" ok") == 3
