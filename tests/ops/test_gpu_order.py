"""impl="auto" on a GPU prefers the tensor-core path (Triton) wherever it exists; the CUDA kernels
(SIMT FMAs, no tensor cores) come second (docs/DESIGN.md, "GPU kernels")."""

import importlib

import pytest
import torch

from mclner.ops import _common, selected_impl

OPS = ["biaffine", "cln_head", "info_nce", "sup_con"]


@pytest.mark.parametrize("op", OPS)
def test_gpu_order_puts_triton_first(op):
    assert importlib.import_module(f"mclner.ops.{op}").GPU_ORDER == ("triton", "cuda")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
@pytest.mark.parametrize("op", OPS)
def test_auto_picks_triton_on_a_gpu_and_cuda_without_triton(monkeypatch, op, dtype):
    pytest.importorskip("triton")
    monkeypatch.setitem(_common._STATUS, "triton", lambda: (True, True, "a GPU (simulated)"))
    monkeypatch.setitem(_common._STATUS, "cuda", lambda: (True, True, "a GPU (simulated)"))
    monkeypatch.setattr(_common._native, "cuda_emulated", lambda: False)
    monkeypatch.setattr(_common._native, "cuda_module", lambda: object())
    gpu = torch.device("cuda", 0)
    assert selected_impl(op, gpu, dtype) == "triton"
    monkeypatch.setitem(_common._STATUS, "triton", lambda: (False, False, "triton is not installed"))
    assert selected_impl(op, gpu, dtype) == "cuda"
