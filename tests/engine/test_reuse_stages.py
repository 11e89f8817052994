"""`mclner train --reuse-stages-from RUN`: a run that takes another run's finished stages ends with the
weights of the same run trained from scratch, bit for bit, and leaves the other run as it was."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Dict, List

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mclner_golden_losses import make_inputs  # noqa: E402

from mclner.errors import UserError  # noqa: E402

_TINY = {
    "dlbri": ["--bridge-max-steps", "2", "--source-max-steps", "2", "--students-max-steps", "3",
              "--combine-max-steps", "2"],
    "concner": ["--kd-max-steps", "2"],
    "mclner": ["--self-training-rounds", "1", "--st-threshold", "0", "--st-max-steps", "2", "--biaffine-dim", "16",
               "--cln-hidden", "16", "--proj-dim", "8", "--tc-max-pairs", "64"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse")
    return root, make_inputs(root)


def _cfg(inputs, out: Path, method: str, *extra: str):
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    _, paths = inputs
    args = ["train", "--method", method, "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
            "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "3",
            "--batch-size", "4", "--effective-batch-size", "4", "--eval-every", "2", "--no-progress", "--seed", "3",
            *_TINY[method], *extra]
    return config_from_args(build_parser().parse_args(args))


def _train(inputs, name: str, method: str, *extra: str, reuse: Path = None) -> Path:
    from mclner.training.trainer import train

    out = inputs[0] / name
    if not (out / "results.json").is_file():
        train(_cfg(inputs, out, method, *extra), reuse_from=str(reuse) if reuse else None)
    return out


def _tree_digest(path: Path) -> Dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _same_weights(a: Path, b: Path, ckpts: List[str]) -> None:
    from mclner.inference.checkpoint import read_weights

    for ckpt in ckpts:
        wa, wb = read_weights(a / ckpt), read_weights(b / ckpt)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), (ckpt, k)


@pytest.mark.parametrize("method,variant,taken,compare", [
    ("dlbri", ["--no-lp"], ["bridge1", "bridge2", "bridge3", "source"],
     ["stages/students/last", "stages/combine/last", "best"]),
    ("dlbri", ["--no-combination"], ["bridge1", "bridge2", "bridge3", "source", "students"], ["best"]),
    ("concner", ["--no-kd"], ["teacher"], ["best"]),
    ("mclner", ["--w-mse", "0.5"], ["source"], ["stages/st1/last", "best"]),
])
def test_reused_stages_equal_training_from_scratch(inputs, method, variant, taken, compare):
    from mclner.inference import load_model

    base = _train(inputs, f"{method}-base", method)
    before = _tree_digest(base)
    tag = "-".join(v.strip("-") for v in variant)
    scratch = _train(inputs, f"{method}-{tag}-scratch", method, *variant)
    reused = _train(inputs, f"{method}-{tag}-reused", method, *variant, reuse=base)
    res = json.loads((reused / "results.json").read_text())
    assert res["reused_stages"] == {"from": str(base), "stages": taken}
    assert sorted(p.name for p in (reused / "stages").iterdir()) == sorted(
        p.name for p in (scratch / "stages").iterdir())
    _same_weights(scratch, reused, compare)
    # the final model decodes the same way (e.g. the student pair the calibration picked)
    cfg = [json.loads((r / "best" / "config.json").read_text())["model"] for r in (scratch, reused)]
    assert cfg[0] == cfg[1]
    # the reused checkpoints record this run's options and still pass their checksums
    args = json.loads((reused / "stages" / taken[-1] / "best" / "training_args.json").read_text())
    assert args == json.loads((reused / "training_args.json").read_text())
    load_model(reused / "best", device="cpu")
    assert _tree_digest(base) == before  # nothing written through a hard link


def test_what_cannot_be_reused_is_named(inputs, tmp_path):
    from mclner.training.trainer import train

    base = _train(inputs, "dlbri-base", "dlbri")
    cases = [
        (["--seed", "4"], "differ in options every stage reads: --seed 4 (the run: 3)"),
        (["--no-bridging"], "nothing to reuse: stage source: the stage reads options that differ: "
                            "--bridging False (the run: True)"),
    ]
    for extra, message in cases:
        with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
            train(_cfg(inputs, tmp_path / "new", "dlbri", *extra), reuse_from=str(base))
    with pytest.raises(UserError, match="cannot be combined with --resume"):
        train(_cfg(inputs, tmp_path / "new", "dlbri"), resume=True, reuse_from=str(base))
    with pytest.raises(UserError, match="not an mclner run folder"):
        train(_cfg(inputs, tmp_path / "new", "dlbri"), reuse_from=str(tmp_path))
    with pytest.raises(UserError, match="--method 'concner' .the run: 'dlbri'."):
        train(_cfg(inputs, tmp_path / "new", "concner"), reuse_from=str(base))
    assert not (tmp_path / "new").exists()  # refused before anything was written


def test_resume_at_a_stage_boundary_is_exact(inputs, tmp_path):
    """Killed after `source` finished and before `students` saved anything: the resumed run ends with
    the uninterrupted run's weights (each later stage seeds its own random stream)."""
    import shutil

    from mclner.training.trainer import train

    base = _train(inputs, "dlbri-base", "dlbri")
    cut = tmp_path / "cut"
    shutil.copytree(base, cut)
    for name in ("stages/students", "stages/combine", "best", "results.json"):
        p = cut / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    train(_cfg(inputs, cut, "dlbri"), resume=True)
    _same_weights(base, cut, ["stages/students/last", "stages/combine/last", "best"])


def test_an_option_the_record_lacks_counts_as_its_default_or_its_before_value():
    """A run recorded before a method option existed did what the option's ``before`` says when its
    default changed later (`--com-threshold`: added with the default `delta`, now `mean`), and the
    default otherwise (`--w-sbc` here): a value other than that is a difference (its stages are not
    taken blindly), that value is not."""
    from mclner.methods import get_method
    from mclner.training.reuse import option_diff

    method = get_method("dlbri")()
    assert method.config.com_threshold == "mean"
    now = {"method": "dlbri", "method_config": json.loads(json.dumps(vars(method.config)))}
    old = dict(now["method_config"])
    del old["com_threshold"], old["w_sbc"]
    rec = {"method": "dlbri", "method_config": old}
    diff = option_diff(rec, now, method, ())
    assert [(d.name, d.old, d.new, d.method_option) for d in diff] == [("com_threshold", "delta", "mean", True)]
    now["method_config"]["com_threshold"] = "delta"
    assert option_diff(rec, now, method, ()) == []
    now["method_config"]["w_sbc"] = 0.5
    assert [(d.name, d.old, d.new) for d in option_diff(rec, now, method, ())] == [("w_sbc", 1.0, 0.5)]


@pytest.mark.parametrize("meta", [{"choices": ("a", "b"), "before": "c"}, {"min": 0.0, "before": -1.0}])
def test_a_before_value_the_option_does_not_take_is_refused_at_registration(meta):
    """Old runs are compared as their ``before`` value: one the option could not have been is a bug of
    the method's declaration, caught when the method registers (not at the first resume)."""
    import dataclasses

    from mclner.methods.base import Method, option, register, registry

    default = "a" if "choices" in meta else 1.0

    @dataclasses.dataclass
    class Config:
        x: object = option(default, "an option", **meta)

    cls = type("BadBefore", (Method,), {"name": "bad-before-test", "Config": Config})
    with pytest.raises(ValueError, match=r"'before' of --x is not valid: --x must be"):
        register(cls)
    assert "bad-before-test" not in registry()
