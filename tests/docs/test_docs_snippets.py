"""The Python a user copies from README.md and docs/USAGE.md runs, in a fresh interpreter whose working
directory is the repository root (where `scripts/train.sh` writes `runs/`): nothing in the checkout
may hide an installed package there (the top-level kernels/ folder once hid Hugging Face's `kernels`,
which transformers imports), and the source tree's mclner says once that it has no native module."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from mclner_golden_losses import make_inputs

from mclner.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", ROOT / "docs" / "USAGE.md"]
# names a snippet uses but does not define (it shows them as placeholders)
PRELUDE = """
gold_tag_lists = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
predicted_entity_lists = [[(0, 1, "PER"), (3, 3, "ORG")], [(1, 1, "ORG")]]
"""


def python_snippets(path: Path) -> list:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.S)


def run_from_root(code: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.setdefault("OMP_NUM_THREADS", "1")
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def _source_tree_has_native() -> bool:
    return any((ROOT / "mclner").glob("_C*.so")) or any((ROOT / "mclner").glob("_C*.pyd"))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("docs")
    paths = make_inputs(root)
    out = root / "run"
    argv = ["train", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh", "--lexicon",
            paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "4", "--batch-size",
            "4", "--effective-batch-size", "8", "--eval-every", "2", "--biaffine-dim", "16", "--cln-hidden", "16",
            "--proj-dim", "8", "--self-training-rounds", "0", "--no-progress", "--seed", "3"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return out


def test_every_doc_has_python_snippets():
    counts = {p.name: len(python_snippets(p)) for p in DOCS}
    assert all(counts.values()), counts


@pytest.mark.parametrize("doc,k", [(p, k) for p in DOCS for k in range(len(python_snippets(p)))],
                         ids=lambda v: v.name if isinstance(v, Path) else str(v))
def test_snippet_runs_from_the_repository_root(run_dir, tmp_path, doc, k):
    code = python_snippets(doc)[k]
    if "matplotlib" in code or "mclner.viz import" in code:
        pytest.importorskip("matplotlib", reason="the plotting snippets need the viz extra")
    # the documented paths point at the run the docs' commands write; here, at a tiny run
    code = re.sub(r'"runs/[\w.-]+/best"', repr(str(run_dir / "best")), code)
    code = re.sub(r'"runs/[\w.-]+"', repr(str(run_dir)), code)
    code = re.sub(r'"figs/([\w.-]+)"', lambda m: repr(str(tmp_path / m[1])), code)
    assert "runs/" not in code and "figs/" not in code
    proc = run_from_root(PRELUDE + code)
    assert proc.returncode == 0, proc.stderr[-3000:]
    if not _source_tree_has_native():  # the checkout's mclner was imported: it says so, once
        assert proc.stderr.count("NativeModuleWarning") == ("import mclner" in code or "from mclner" in code)


def test_transformers_imports_beside_mclner_from_the_root():
    proc = run_from_root("import transformers, mclner; from transformers import BertModel; print(mclner.__file__)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(ROOT / "mclner" / "__init__.py")  # the root is on sys.path
    assert "NativeModuleWarning" in proc.stderr or _source_tree_has_native()


def test_kernels_folder_is_not_a_top_level_package():
    assert not (ROOT / "kernels" / "__init__.py").exists()
    proc = run_from_root("import importlib.util as u; s = u.find_spec('kernels'); "
                         "print(s.origin if s and s.origin else 'namespace'); "
                         "import mclner.kernels.info_nce as k; print(k.__file__)")
    assert proc.returncode == 0, proc.stderr[-3000:]
    top, ours = proc.stdout.split()
    if importlib.util.find_spec("kernels") is not None and importlib.util.find_spec("kernels").origin:
        assert not top.startswith(str(ROOT / "kernels")), top  # an installed `kernels` wins over the folder
    assert ours == str(ROOT / "kernels" / "info_nce.py")  # the checkout's mclner.kernels is the folder


def test_no_top_level_name_of_the_checkout_can_shadow_a_distribution():
    """What the checkout puts on sys.path (the root's folders; tests/ and benchmarks/ under pytest) is a
    namespace folder, which any installed package outranks, or a module whose name is the project's."""
    regular = [p.parent.name for p in ROOT.glob("*/__init__.py") if p.parent.name != "mclner"]
    assert regular == []
    allowed = re.compile(r"^(mclner\w*|conftest|test_\w+|bench_\w+)$")
    for folder in ("tests", "benchmarks"):
        names = [p.stem for p in (ROOT / folder).glob("*.py")] + [
            p.parent.name for p in (ROOT / folder).glob("*/__init__.py")]
        bad = [n for n in names if not allowed.match(n)]
        assert bad == [], f"{folder}/: {bad} could hide an installed distribution of that name"
