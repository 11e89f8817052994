"""mclner: cross-lingual NER with multi-view contrastive learning (mCL-NER) on fused relation kernels."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"

try:  # torch is a prerequisite, not a declared dependency (see pyproject.toml)
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "mclner needs PyTorch, which it does not install itself so that it never replaces yours. "
        "Install it first: `pip install torch==2.13.0` (CPU) or the build for your CUDA version."
    ) from exc


def _register_source_kernels() -> None:
    """In a source checkout the Triton kernels live in the top-level kernels/ folder; an installed
    wheel has them as mclner/kernels. Make `mclner.kernels` resolve in both cases, lazily (importing
    it does not import triton)."""
    here = Path(__file__).resolve().parent
    if (here / "kernels" / "__init__.py").is_file() or "mclner.kernels" in sys.modules:
        return
    src = here.parent / "kernels" / "__init__.py"
    if not src.is_file():
        return
    spec = importlib.util.spec_from_file_location(
        "mclner.kernels", src, submodule_search_locations=[str(src.parent)]
    )
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    sys.modules["mclner.kernels"] = module
    spec.loader.exec_module(module)


_register_source_kernels()

from mclner import ops  # noqa: E402


def __getattr__(name: str):
    # imported on first use: the predictor pulls in transformers, which `import mclner` should not
    if name == "NERPredictor":
        from mclner.predictor import NERPredictor

        return NERPredictor
    raise AttributeError(f"module 'mclner' has no attribute {name!r}")


__all__ = ["NERPredictor", "ops", "__version__"]
