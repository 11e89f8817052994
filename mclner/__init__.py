"""mclner: cross-lingual NER with multi-view contrastive learning (mCL-NER) on fused relation kernels."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import warnings
from pathlib import Path

__version__ = "0.1.0"

try:  # torch is a prerequisite, not a declared dependency (see pyproject.toml)
    import torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "mclner needs PyTorch, which it does not install itself so that it never replaces yours. "
        "Install it first: `pip install torch==2.13.0` (CPU) or the build for your CUDA version."
    ) from exc


class NativeModuleWarning(UserWarning):
    """mclner was imported without its native CPU module: ``impl="auto"`` runs the PyTorch reference."""


def _source_checkout_setup() -> None:
    """A source checkout (the repository root on sys.path: ``python -c`` / ``python -m`` from it) has
    the Triton kernels in the top-level kernels/ folder, which has no __init__.py so that it never
    hides an installed package named ``kernels``; an installed wheel has them as mclner/kernels. Make
    ``mclner.kernels`` resolve in both cases (importing it does not import triton). Without the built
    native module, say so once: ``impl="auto"`` would otherwise quietly run the slow reference."""
    here = Path(__file__).resolve().parent
    if importlib.util.find_spec("mclner._C") is None:
        warnings.warn(
            f"mclner is imported from {here} without its native CPU module, so impl='auto' runs the "
            "PyTorch reference ops: install it (`pip install .` or `bash scripts/pip_install.sh`), or build "
            "it in place (`bash scripts/dev_build.sh`), or run from outside the source tree",
            NativeModuleWarning,
            stacklevel=2,
        )
    if (here / "kernels").is_dir() or "mclner.kernels" in sys.modules:
        return
    src = here.parent / "kernels"
    if not (src / "_common.py").is_file():
        return
    spec = importlib.machinery.ModuleSpec("mclner.kernels", None, is_package=True)
    spec.submodule_search_locations = [str(src)]
    module = importlib.util.module_from_spec(spec)
    module.__doc__ = "Triton kernels of mclner (in a source checkout: the top-level kernels/ folder)."
    sys.modules["mclner.kernels"] = module


_source_checkout_setup()

from mclner import ops  # noqa: E402


def __getattr__(name: str):
    # imported on first use: the predictor pulls in transformers, which `import mclner` should not
    if name == "NERPredictor":
        from mclner.predictor import NERPredictor

        return NERPredictor
    raise AttributeError(f"module 'mclner' has no attribute {name!r}")


__all__ = ["NERPredictor", "NativeModuleWarning", "ops", "__version__"]
