"""`--reuse-stages-from` takes nothing it cannot vouch for (issue 25 item 7): a run whose record lacks
options (or whose record disagrees with its stages' own) is refused, and symbolic links in a stage
that lead out of it or loop are refused before anything is copied."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mclner_golden_losses import make_inputs  # noqa: E402

from mclner.errors import UserError  # noqa: E402

_TINY = ["--self-training-rounds", "1", "--st-threshold", "0", "--st-max-steps", "2", "--biaffine-dim", "16",
         "--cln-hidden", "16", "--proj-dim", "8", "--tc-max-pairs", "64"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A finished two-stage mCL-NER run (source, st1) and the inputs it was trained on."""
    from mclner.training.trainer import train

    root = tmp_path_factory.mktemp("trust-reuse")
    paths = make_inputs(root)
    out = root / "base"
    train(_cfg(paths, out))
    return paths, out


def _cfg(paths, out: Path, *extra: str):
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    args = ["train", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
            "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "2",
            "--batch-size", "4", "--effective-batch-size", "4", "--eval-every", "2", "--no-progress", "--seed", "3",
            *_TINY, *extra]
    return config_from_args(build_parser().parse_args(args))


@pytest.fixture()
def run(base, tmp_path):
    """A copy of the base run, free to be edited."""
    paths, out = base
    return paths, Path(shutil.copytree(out, tmp_path / "copy", symlinks=True))


def _reuse(paths, src: Path, dest: Path, *extra: str):
    from mclner.training.trainer import train

    return train(_cfg(paths, dest, *extra), reuse_from=str(src))


def test_a_record_without_the_options_is_refused(run, tmp_path):
    """The record lacks --head-lr: the run's stages may have been trained with any value, so this
    run's (different) one cannot be vouched for; nothing is copied, nothing claims the new value."""
    paths, src = run
    rec = json.loads((src / "training_args.json").read_text())
    del rec["head_lr"], rec["method_config"]["w_mse"]
    (src / "training_args.json").write_text(json.dumps(rec))
    with pytest.raises(UserError, match=r"does not record --head-lr, --w-mse"):
        _reuse(paths, src, tmp_path / "new", "--head-lr", "5e-3")
    assert not (tmp_path / "new").exists()


def test_a_record_that_disagrees_with_its_stages_is_refused(run, tmp_path):
    """A run folder whose training_args.json claims other values than the checkpoints of the stage it
    offers (each checkpoint records, under its checksums, the options it was trained with)."""
    paths, src = run
    rec = json.loads((src / "training_args.json").read_text())
    rec["head_lr"] = 5e-3
    (src / "training_args.json").write_text(json.dumps(rec))
    with pytest.raises(UserError, match=r"stage source .*--head-lr 0.001.* training_args.json says 0.005"):
        _reuse(paths, src, tmp_path / "new", "--head-lr", "5e-3")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("where, target", [
    ("stages/source/loop", "."),  # a loop: copied by following, it nests without end
    ("stages/source/best/up", ".."),
    ("stages/source/etc", "/etc"),
    ("stages/source/best/passwd", "/etc/passwd"),
])
def test_links_out_of_a_stage_are_refused(run, tmp_path, where, target):
    paths, src = run
    os.symlink(target, src / where)
    with pytest.raises(UserError, match=f"{src / where}: a symbolic link"):
        _reuse(paths, src, tmp_path / "new", "--w-mse", "0.5")
    assert not (tmp_path / "new").exists()
