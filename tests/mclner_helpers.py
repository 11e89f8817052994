"""Shared checks for the fused ops: every impl against the reference, forward and all gradients."""

from __future__ import annotations

import tempfile
from typing import Callable, Dict, Sequence

import pytest
import torch

from mclner import _native
from mclner.ops import available_impls

FUSED_IMPLS = ("cpu", "triton", "cuda")

# CUDA cases run on the CPU through the emulated CUDA module (MCLNER_CUDA_EMULATE, see
# scripts/cuda_emulate.sh): node ids and worst errors, for the summary line in conftest.py.
EMULATED = {"tests": set(), "errors": {}, "active": None}


def cuda_emulated() -> bool:
    return _native.cuda_emulated()


def mark_emulated(nodeid: str) -> None:
    EMULATED["tests"].add(nodeid)
    EMULATED["active"] = nodeid


def impl_device(impl: str) -> torch.device:
    """Device an impl is tested on; skips when it cannot run here."""
    status = available_impls()[impl]
    if impl == "cuda" and cuda_emulated():  # the CUDA kernels on CPU tensors
        import os

        mark_emulated(os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0])
        return torch.device("cpu")
    if impl == "cuda" or (impl == "triton" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            pytest.skip(f"{impl}: needs a CUDA device ({status['reason']})")
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    if not status["runnable"]:
        pytest.skip(f"{impl} not runnable here: {status['reason']}")
    return device


def impl_dtypes(impl: str, device: torch.device) -> Sequence[torch.dtype]:
    if impl == "cuda":  # the CUDA kernels take every GPU storage type (emulated on the CPU too)
        return (torch.float32, torch.float16, torch.bfloat16)
    if device.type == "cuda":
        return (torch.float32, torch.bfloat16)
    if impl == "triton":  # the interpreter computes in numpy: float32 is what the GPU path uses
        return (torch.float32,)
    return (torch.float32, torch.float64)


def _grads(fn: Callable, inputs: Dict[str, torch.Tensor], upstream: torch.Tensor | None):
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in inputs.items()}
    out = fn(**leaves)
    g = torch.ones_like(out) if upstream is None else upstream.to(out.dtype)
    out.backward(g)
    return out.detach(), {k: v.grad for k, v in leaves.items()}


def _err(x: torch.Tensor, ref: torch.Tensor) -> float:
    return (x.double() - ref.double()).abs().max().item()


def compare_to_reference(
    fused: Callable,
    reference: Callable,
    inputs: Dict[str, torch.Tensor],
    dtype: torch.dtype,
    *,
    atol: float,
    rtol: float = 0.0,
    upstream_seed: int = 1234,
) -> None:
    """Forward and every input gradient of `fused` in `dtype` against `reference`.

    float64: direct closeness. Lower precision (flash-attention's rule): the fused error against a
    float64 oracle is at most 2× the error of the reference run in the same dtype, plus `atol`
    (and `rtol`·|oracle|).
    """
    cast = {k: v.to(dtype) for k, v in inputs.items()}
    out, grads = _grads(fused, cast, None)
    gen = torch.Generator(device="cpu").manual_seed(upstream_seed)
    upstream = torch.randn(out.shape, generator=gen, dtype=torch.float64).to(out.device)
    if out.dim() == 0:
        upstream = upstream.abs() + 0.5
    out, grads = _grads(fused, cast, upstream)

    oracle_in = {k: v.to(torch.float64) for k, v in inputs.items()}
    o_out, o_grads = _grads(reference, oracle_in, upstream)
    assert out.shape == o_out.shape, f"output shape {tuple(out.shape)} != {tuple(o_out.shape)}"
    assert out.dtype == dtype, f"output dtype {out.dtype} != {dtype}"
    if dtype == torch.float64:
        torch.testing.assert_close(out, o_out, atol=atol, rtol=max(rtol, 1e-7), msg="forward")
        for k in inputs:
            assert grads[k] is not None, f"no gradient for {k}"
            torch.testing.assert_close(grads[k], o_grads[k], atol=atol, rtol=max(rtol, 1e-7), msg=f"grad {k}")
        return
    s_out, s_grads = _grads(reference, cast, upstream)
    pairs = [("forward", out, s_out, o_out)] + [
        (f"grad {k}", grads[k], s_grads[k], o_grads[k]) for k in inputs
    ]
    for name, got, same, oracle in pairs:
        assert got is not None, f"{name}: no gradient"
        assert got.shape == oracle.shape, f"{name}: shape {tuple(got.shape)} != {tuple(oracle.shape)}"
        assert torch.isfinite(got).all(), f"{name}: non-finite values"
        bound = 2 * _err(same, oracle) + atol + rtol * oracle.abs().max().item()
        if dtype == torch.float16:
            # float16 results carry ~1e-3 relative rounding from the rounded inputs and the output
            # store; when the same-precision reference happens to round luckily, the 2x rule alone
            # fails on a single rounding: allow half an ulp at the output's scale on top.
            bound += 2.0**-11 * oracle.abs().max().item()
        err = _err(got, oracle)
        same_err = _err(same, oracle)
        if EMULATED["active"] is not None:
            record_emulated(dtype, name, err, oracle, bound)
        assert err <= bound, f"{name}: error {err:.3e} > bound {bound:.3e} (same-precision ref {same_err:.3e})"


def record_emulated(dtype: torch.dtype, name: str, err: float, oracle: torch.Tensor, bound: float) -> None:
    """Keeps the worst scaled error (max|got - oracle| / max|oracle|) and the worst err/bound per dtype."""
    scale = oracle.abs().max().item()
    key = str(dtype).replace("torch.", "")
    worst = EMULATED["errors"].setdefault(key, {"scaled": (0.0, ""), "of_bound": (0.0, ""), "checks": 0})
    where = f"{EMULATED['active']} {name}"
    worst["checks"] += 1
    if scale > 1e-6 and err / scale >= worst["scaled"][0]:  # (an all-zero gradient has no scale)
        worst["scaled"] = (err / scale, where)
    if err / bound >= worst["of_bound"][0]:
        worst["of_bound"] = (err / bound, where)


# Working directory for child Pythons: `python -c` puts the cwd first on sys.path, and the source
# checkout's mclner/ (without built modules in CI) must not shadow the installed package.
NEUTRAL_CWD = tempfile.gettempdir()


def subprocess_env(**extra: str) -> dict:
    """Environment for a child Python that imports the same mclner as this process (the installed
    package in CI, the source tree with in-place modules in development)."""
    import os
    from pathlib import Path

    import mclner

    root = str(Path(mclner.__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)
