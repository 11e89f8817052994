"""Every repository path that the scripts and docs name exists.

Moving files (e.g. grouping tests/ into folders) left scripts/cuda_emulate_asan.sh and
scripts/gpu_check.sh pointing at old test files; a script run only on a lent GPU would find out
there, so the paths are checked here.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOP = "tests|scripts|benchmarks|docs|csrc|kernels|mclner"
EXT = "py|sh|md|cuh|cu|hpp|h|cpp|txt|toml|json"
# a path starts at a top-level folder not preceded by a path character and ends at a known suffix
PATH = re.compile(rf"(?<![\w./-])((?:{TOP})/[\w./*-]+?\.(?:{EXT}))(?![\w*])")


def _named_paths():
    # the package's docstrings and comments too: they name test files, which move with the package
    sources = [*ROOT.glob("scripts/*.sh"), *ROOT.glob("scripts/*.py"), *ROOT.glob("docs/*.md"),
               *ROOT.glob("benchmarks/*.md"), ROOT / "README.md", ROOT / ".ci" / "run", *ROOT.glob("mclner/**/*.py")]
    for src in sources:
        for lineno, line in enumerate(src.read_text(encoding="utf-8").splitlines(), 1):
            for m in PATH.finditer(line):
                yield src.relative_to(ROOT), lineno, m.group(1)


def test_the_pattern_finds_paths_and_only_whole_ones():
    found = [m.group(1) for m in PATH.finditer(
        "see `tests/ops/test_op_*.py`, csrc/include/mclner/cuda_common.cuh and mclner/cli.py; "
        "not runs/quick/x.json nor a/tests/y.py")]
    assert found == ["tests/ops/test_op_*.py", "csrc/include/mclner/cuda_common.cuh", "mclner/cli.py"]


def test_every_named_path_exists():
    named = list(_named_paths())
    assert len(named) > 20  # the scan sees the docs at all
    missing = [f"{src}:{lineno}: {path}" for src, lineno, path in named if not list(ROOT.glob(path))]
    assert not missing, "paths named but not in the repository:\n" + "\n".join(missing)
