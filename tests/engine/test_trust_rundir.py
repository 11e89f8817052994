"""`--overwrite` deletes only a folder that mclner itself marked as its run (issue 25 item 8): another
tool's folder that happens to hold ``training_args.json`` and ``log.jsonl`` is refused, untouched."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mclner_fixtures import patch_training_data
from test_reliability_rundir import _cfg

from mclner.errors import UserError


def _other_tool(d: Path) -> dict:
    """A run folder of another training tool, with file names mclner also writes."""
    files = {"training_args.json": '{"lr": 0.1}', "log.jsonl": '{"step": 1}\n', "best/model.bin": "weights",
             "tensorboard/events.out": "events", "results.json": "{}"}
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text)
    return files


def _unchanged(d: Path, files: dict) -> bool:
    return all((d / n).read_text() == t for n, t in files.items())


@pytest.mark.parametrize("marker", [None, "", "someone else's .mclner-run\n", '{"format": "other"}'])
def test_another_tools_run_folder_is_refused(tmp_path, monkeypatch, encoder_dir, marker):
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    out = tmp_path / "theirs"
    files = _other_tool(out)
    if marker is not None:
        (out / ".mclner-run").write_text(marker)
    for kw in ({"overwrite": True}, {"resume": True}):
        with pytest.raises(UserError, match="not an mclner run folder"):
            train(_cfg(out, encoder_dir), **kw)
        assert _unchanged(out, files)


def test_a_run_without_the_marker_is_known_by_its_checkpoints(tmp_path, monkeypatch, encoder_dir):
    """A run of an mclner that wrote no marker yet: its checkpoints' config.json (format
    mclner-checkpoint) mark it; --overwrite replaces it and writes the marker."""
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    out = tmp_path / "run"
    train(_cfg(out, encoder_dir))
    (out / ".mclner-run").unlink()
    train(_cfg(out, encoder_dir, seed=4), overwrite=True)
    assert json.loads((out / "training_args.json").read_text())["seed"] == 4
    assert json.loads((out / ".mclner-run").read_text())["format"] == "mclner-run"
