"""The build itself: the CPU module is always there; the CUDA module is compiled wherever nvcc is."""

import os
import shutil

import pytest

from mclner import _native
from mclner.ops import available_impls


def test_cpu_module_is_built():
    assert _native.cpu_module() is not None, _native.cpu_error()
    info = available_impls()
    assert info["cpu"]["built"] and info["cpu"]["runnable"]
    assert info["reference"]["runnable"]


def test_available_impls_schema():
    info = available_impls()
    assert set(info) == {"reference", "cpu", "triton", "cuda"}
    for name, status in info.items():
        assert set(status) == {"built", "runnable", "reason"}, name
        assert isinstance(status["built"], bool) and isinstance(status["runnable"], bool)
        assert isinstance(status["reason"], str) and status["reason"]
        assert status["built"] or not status["runnable"], name


@pytest.mark.skipif(
    shutil.which("nvcc") is None or os.environ.get("MCLNER_CUDA", "AUTO").upper() == "OFF",
    reason="no nvcc on this machine (or MCLNER_CUDA=OFF): the CUDA module is not expected",
)
def test_cuda_module_compiled_when_nvcc_present():
    """CUDA code that stops compiling fails CI: nvcc is present, so the module must exist."""
    mod, err = _native._load("_cuda")  # the nvcc-built module, even while tests use the emulated one
    assert mod is not None, err
    assert mod.emulator == ""
    assert available_impls()["cuda"]["built"]
    assert mod.runtime_version() >= 11000
    for name in ("biaffine_forward", "cln_head_forward", "info_nce_forward", "sup_con_forward"):
        assert hasattr(mod, name), f"CUDA module lacks {name}"
