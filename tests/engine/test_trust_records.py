"""Nothing lost (issue 25 item 9): the run record is written atomically and a resume never skips
its check; log.jsonl is appended with a framing that a kill cannot glue records together in, and
readers skip a torn last line with a warning."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from mclner_fixtures import patch_training_data
from test_reliability_checkpoint import _cfg

from mclner.errors import UserError


class Killed(BaseException):
    """Stands for kill -9."""


def _cut_last_record(log: Path) -> str:
    """Cut the log in the middle of its last record, as a kill while writing it would."""
    data = log.read_bytes()
    start = data.rstrip(b"\n").rfind(b"\n") + 1
    log.write_bytes(data[: start + (len(data) - start) // 2])
    return data[start:].decode().strip()


def test_a_torn_log_line_is_repaired_before_appending(tmp_path, monkeypatch, encoder_dir, capsys):
    """Killed while writing a record, then resumed: the next record does not glue onto the torn one,
    and the curves read the whole log."""
    from mclner.training.trainer import train
    from mclner.viz.runs import read_log

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    cfg = _cfg(tmp_path, encoder_dir, stop_after_steps=3)
    train(cfg)
    log = Path(cfg.output_dir) / "log.jsonl"
    before = len(read_log(log))
    lost = _cut_last_record(log)
    cfg.stop_after_steps = None
    capsys.readouterr()
    train(cfg, resume=True)
    assert "removed a torn last line" in capsys.readouterr().out
    lines = log.read_text().splitlines()
    assert all(isinstance(json.loads(x), dict) for x in lines)  # each line one whole record
    assert lost not in lines and len(read_log(log)) > before


def test_readers_skip_a_torn_last_line_with_a_warning(tmp_path, caplog):
    from mclner.store.jsonl import read_jsonl
    from mclner.viz.runs import read_log

    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "loss": 0.5}\n{"step": 2, "loss": 0.4}\n{"step": 3, "lo')
    with caplog.at_level(logging.WARNING, logger="mclner"):
        assert [r["step"] for r in read_log(log)] == [1, 2]
    assert any(f"{log}:3: skipped a torn last line" in r.getMessage() for r in caplog.records)
    # a complete last record without its newline is a record
    log.write_text('{"step": 1}\n{"step": 2}')
    assert [r["step"] for r in read_jsonl(log)] == [1, 2]
    # anything else that is not a record stays an error naming the line
    log.write_text('{"step": 1}\n{"step": 2, "lo\n{"step": 3}\n')
    with pytest.raises(UserError, match=f"{log}:2: not a JSON record"):
        read_log(log)
    log.write_bytes(b'{"step": 1}\n\xff\xfe\x00binary\n')
    with pytest.raises(UserError, match=f"{log}:2: not UTF-8"):
        read_log(log)


def test_the_appender_completes_or_cuts_the_tail(tmp_path):
    from mclner.store.jsonl import JsonlAppender, read_jsonl

    log = tmp_path / "log.jsonl"
    log.write_text('{"a": 1}\n{"b": 2}')  # killed between the record and its newline
    w = JsonlAppender(log)
    w.append({"c": 3})
    w.close()
    assert read_jsonl(log) == [{"a": 1}, {"b": 2}, {"c": 3}] and "completed" in w.repaired
    log.write_text('{"a": 1}\n{"b": 2')
    w = JsonlAppender(log)
    w.append({"c": 3})
    w.close()
    assert log.read_text() == '{"a": 1}\n{"c": 3}\n' and "removed" in w.repaired


def test_a_cut_run_record_is_an_error_at_resume(tmp_path, monkeypatch, encoder_dir):
    """training_args.json cut short (a kill while an older mclner wrote it), then --resume with other
    options: a one-line error naming the record, not a skipped check and a traceback later."""
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    cfg = _cfg(tmp_path, encoder_dir, stop_after_steps=3)
    train(cfg)
    rec = Path(cfg.output_dir) / "training_args.json"
    text = rec.read_text()
    rec.write_text(text[: len(text) // 2])
    cfg.stop_after_steps = None
    cfg.method_options["biaffine_dim"] = 16
    with pytest.raises(UserError, match=f"{rec}: not a readable run record"):
        train(cfg, resume=True)
    assert rec.read_text() == text[: len(text) // 2]  # not rewritten


def test_the_run_record_is_replaced_atomically(tmp_path, monkeypatch):
    """A kill while the record is written leaves the previous record whole."""
    from mclner.training.rundir import read_run_record, write_run_record

    write_run_record(tmp_path, {"seed": 1, "method": "mclner"})

    def killed(fd):
        raise Killed

    monkeypatch.setattr(os, "fsync", killed)  # the new text is written, not yet in place
    with pytest.raises(Killed):
        write_run_record(tmp_path, {"seed": 2, "method": "mclner", "pad": "x" * 100000})
    monkeypatch.undo()
    assert read_run_record(tmp_path) == {"seed": 1, "method": "mclner"}
