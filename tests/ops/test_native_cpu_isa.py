"""One instruction-set scheme for the CPU kernels: MCLNER_CPU_ISA caps biaffine, cln_head, info_nce and
sup_con alike, and every bound kernel takes the same `isa` argument."""

from __future__ import annotations

import pytest
import torch

from mclner import _native
from mclner.ops import biaffine, cln_head, info_nce, sup_con

C = _native.cpu_module()
pytestmark = pytest.mark.skipif(C is None, reason=f"native CPU module not built: {_native.cpu_error()}")
LEVELS = ["generic", "avx2", "avx512"]


def _call(op: str):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    if op == "biaffine":
        return biaffine(r(1, 3, 4), r(1, 3, 4), r(2, 4, 4), r(2, 8), r(2), impl="cpu")
    if op == "cln_head":
        return cln_head(r(1, 3, 4), r(4, 4), r(4), r(4, 4), r(4), r(5, 4), r(5), r(2, 5), r(2), impl="cpu")
    if op == "sup_con":
        return sup_con(r(5, 3), torch.tensor([0, 1, 0, 1, -1]), impl="cpu")
    return info_nce(r(5, 3), r(5, 3), impl="cpu")


def test_auto_is_the_best_level_without_the_variable(monkeypatch):
    monkeypatch.delenv("MCLNER_CPU_ISA", raising=False)
    assert C.cpu_best_isa() in LEVELS
    assert C.cpu_isa() == C.cpu_best_isa()


@pytest.mark.parametrize("cap", LEVELS)
def test_variable_caps_the_level(cap, monkeypatch):
    monkeypatch.setenv("MCLNER_CPU_ISA", cap)
    best = LEVELS.index(C.cpu_best_isa())
    assert C.cpu_isa() == LEVELS[min(best, LEVELS.index(cap))]
    # an explicit level wins over the variable
    assert C.cpu_isa(0) == "generic"


@pytest.mark.parametrize("op", ["biaffine", "cln_head", "info_nce", "sup_con"])
def test_every_kernel_reads_the_variable(op, monkeypatch):
    monkeypatch.setenv("MCLNER_CPU_ISA", "sse9")
    with pytest.raises(ValueError, match="MCLNER_CPU_ISA must be one of generic, avx2, avx512.*'sse9'"):
        _call(op)
    monkeypatch.setenv("MCLNER_CPU_ISA", "generic")
    assert torch.isfinite(_call(op)).all()


def test_bad_isa_argument():
    with pytest.raises(ValueError, match="'isa' must be -1"):
        C.cpu_isa(3)
    best = LEVELS.index(C.cpu_best_isa())
    if best < 2:
        with pytest.raises(ValueError, match="not supported by this CPU"):
            C.cpu_isa(best + 1)
