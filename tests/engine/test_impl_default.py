"""The fast path by default (issue 14, item 5): with no --impl, training runs impl "auto", which picks
the native CPU kernels when they are built and the reference when nothing fused is (no error); the
implementation is recorded in the run's options, and --resume keeps the one a run used."""

from __future__ import annotations

import json

import pytest
import torch

from mclner.errors import UserError
from mclner.ops import _common, available_impls, selected_impl
from mclner.ops.impl import DEFAULT_IMPL, OPS, choose_impl
from mclner.training.config import TrainConfig, recorded_impl
from mclner.training.trainer import Trainer

_NATIVE = available_impls()["cpu"]["runnable"]
_OPS = ("biaffine", "cln_head", "info_nce", "sup_con")
assert OPS == _OPS  # the one list of the ops with several implementations


@pytest.fixture
def no_native(monkeypatch):
    """As if the native CPU module were not built."""
    monkeypatch.setitem(_common._STATUS, "cpu", lambda: (False, False, "native CPU module not built: (test)"))


def test_resolve_impl_defaults_to_auto():
    assert DEFAULT_IMPL == "auto"
    assert choose_impl(None) == "auto"
    assert choose_impl(None, fused=True) == "auto"
    assert choose_impl("auto", fused=True) == "auto"
    assert choose_impl("reference") == "reference"
    with pytest.raises(UserError, match="--fused means --impl auto; it contradicts --impl reference"):
        choose_impl("reference", fused=True)
    with pytest.raises(UserError, match="impl must be one of"):
        choose_impl("fast")


def test_train_defaults_to_auto_and_records_it(tmp_path):
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    cfg = config_from_args(build_parser().parse_args(["train", "--output-dir", str(tmp_path / "run")]))
    assert cfg.impl is None and not cfg.fused  # nothing chosen on the command line
    tr = Trainer(cfg)
    assert tr.impl == "auto"
    # what training_args.json and the checkpoints get (Trainer._save writes self.cfg)
    assert tr.cfg.impl == "auto" and tr.cfg.to_dict()["impl"] == "auto"
    assert recorded_impl(tr.cfg.to_dict()) == "auto"
    assert cfg.impl is None  # the caller's config is not changed
    explicit = config_from_args(build_parser().parse_args(["train", "--impl", "reference",
                                                           "--output-dir", str(tmp_path / "r")]))
    assert Trainer(explicit).impl == "reference"


def test_train_fused_contradicting_impl_is_refused(tmp_path, capsys):
    from mclner.cli import main

    assert main(["train", "--fused", "--impl", "reference", "--output-dir", str(tmp_path / "run")]) == 2
    assert "--fused means --impl auto; it contradicts --impl reference" in capsys.readouterr().err


@pytest.mark.skipif(not _NATIVE, reason="native CPU module not built")
def test_auto_picks_the_native_kernels_when_built(tmp_path):
    for op in _OPS:
        assert selected_impl(op, torch.device("cpu"), torch.float32) == "cpu"
    tr = Trainer(TrainConfig(output_dir=str(tmp_path / "run")))
    assert tr.selected == {op: "cpu" for op in _OPS}


def test_auto_falls_back_to_reference_without_native_module(no_native, tmp_path):
    from mclner import ops

    assert not available_impls()["cpu"]["runnable"]
    for op in _OPS:
        assert selected_impl(op, torch.device("cpu"), torch.float32) == "reference"
    tr = Trainer(TrainConfig(output_dir=str(tmp_path / "run")))  # no error: auto runs the reference
    assert tr.impl == "auto" and tr.selected == {op: "reference" for op in _OPS}
    # an op under auto then gives exactly the reference result
    g = torch.Generator().manual_seed(0)
    za, zb = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    assert torch.equal(ops.info_nce(za, zb, temperature=0.2, impl="auto"),
                       ops.info_nce(za, zb, temperature=0.2, impl="reference"))
    # while asking for the native kernels explicitly is a one-line error before any work
    with pytest.raises(UserError, match="--impl cpu cannot run here: native CPU module not built"):
        Trainer(TrainConfig(impl="cpu", output_dir=str(tmp_path / "run")))


@pytest.mark.parametrize(("saved", "want"), [
    ({"impl": None, "fused": False}, "reference"),  # recorded before auto became the default
    ({"impl": None, "fused": True}, "auto"),
    ({"impl": "reference", "fused": False}, "reference"),
    ({"impl": "auto", "fused": False}, "auto"),
    ({"impl": "auto", "fused": True}, "auto"),
])
def test_resume_keeps_the_runs_impl(tmp_path, saved, want):
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_args.json").write_text(json.dumps({**TrainConfig().to_dict(), **saved}))
    assert recorded_impl(json.loads((run / "training_args.json").read_text())) == want
    tr = Trainer(TrainConfig(output_dir=str(run)), resume=True)
    assert tr.impl == want and tr.cfg.impl == want and tr.impl_kept
    # a new run in that folder (no --resume) takes the default; an explicit choice wins on --resume
    assert Trainer(TrainConfig(output_dir=str(run))).impl == "auto"
    other = "auto" if want == "reference" else "reference"
    tr = Trainer(TrainConfig(output_dir=str(run), impl=other), resume=True)
    assert tr.impl == other and not tr.impl_kept
    assert Trainer(TrainConfig(output_dir=str(run), fused=True), resume=True).impl == "auto"


def test_resume_of_a_run_whose_impl_cannot_run_here_says_so(no_native, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "training_args.json").write_text(json.dumps({**TrainConfig().to_dict(), "impl": "cpu"}))
    with pytest.raises(UserError, match=r"--impl cpu cannot run here: .*\(the run used it; pass --impl"):
        Trainer(TrainConfig(output_dir=str(run)), resume=True)
    assert Trainer(TrainConfig(output_dir=str(run), impl="auto"), resume=True).impl == "auto"


def test_resume_without_recorded_options_takes_the_default(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    assert Trainer(TrainConfig(output_dir=str(run)), resume=True).impl == "auto"  # no training_args.json
    (run / "training_args.json").write_text("{not json")  # unreadable: an error, never a skipped check
    with pytest.raises(UserError, match="training_args.json: not a readable run record"):
        Trainer(TrainConfig(output_dir=str(run)), resume=True)
    assert recorded_impl({"impl": "fast"}) is None and recorded_impl([]) is None and recorded_impl({}) is None


def test_report_reproduces_a_reference_run_with_reference():
    from mclner.viz.report import train_command

    old = {**TrainConfig().to_dict(), "impl": None, "fused": False}
    words = train_command(old)
    assert words[words.index("--impl") + 1] == "reference"
    new = {**TrainConfig().to_dict(), "impl": "auto"}
    words = train_command(new)
    assert words[words.index("--impl") + 1] == "auto"
