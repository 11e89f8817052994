"""The output folder: --overwrite deletes nothing before everything is validated and only what mclner
wrote; one run per folder at a time (issue 10 items 7, 8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mclner_fixtures import patch_training_data
from mclner_helpers import NEUTRAL_CWD, subprocess_env

from mclner.cli import main
from mclner.errors import UserError


def _cfg(out: Path, encoder: str, **kw):
    from mclner_fixtures import train_config

    base = dict(source="synthetic-en", target="synthetic-zh", lexicon="synthetic", encoder=encoder,
                output_dir=str(out), batch_size=8, effective_batch_size=8, max_steps=2, eval_every=100,
                biaffine_dim=8, cln_hidden=8, proj_dim=8, progress=False, patience=0, seed=3, codeswitch=False,
                max_eval_sentences=4)
    base.update(kw)
    return train_config(**base)


def _one_line(capsys, argv, expect):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    return err[0]


def _user_files(d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    (d / "thesis.tex").write_text("years of work")
    (d / "figs").mkdir(exist_ok=True)
    (d / "figs" / "a.png").write_bytes(b"\x89PNG")


def test_overwrite_with_bad_source_deletes_nothing(tmp_path, capsys, encoder_dir):
    out = tmp_path / "mine"
    _user_files(out)
    _one_line(capsys, ["train", "--source", "no-such-corpus", "--encoder", encoder_dir, "--output-dir", str(out),
                       "--overwrite", "--no-progress", "--no-codeswitch"], "mine")
    assert (out / "thesis.tex").read_text() == "years of work" and (out / "figs" / "a.png").is_file()


def test_failed_validation_leaves_no_new_folder(tmp_path, capsys, encoder_dir):
    out = tmp_path / "new"
    _one_line(capsys, ["train", "--source", "no-such-corpus", "--encoder", encoder_dir, "--output-dir", str(out),
                       "--no-progress", "--no-codeswitch"], "no-such-corpus")
    assert not out.exists()


def test_stale_lock_message_names_the_dead_process(tmp_path):
    import socket

    from mclner.training.rundir import RunLock

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()  # a PID that is gone
    msg = RunLock(tmp_path)._busy_message({"pid": proc.pid, "host": socket.gethostname(), "since": "t"})
    assert f"process {proc.pid} is gone" in msg and "delete the lock file" in msg


def test_overwrite_refuses_a_folder_that_is_not_a_run(tmp_path, monkeypatch, encoder_dir):
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    out = tmp_path / "mine"
    _user_files(out)
    with pytest.raises(UserError, match="not an mclner run folder"):
        train(_cfg(out, encoder_dir), overwrite=True)
    assert (out / "thesis.tex").is_file() and (out / "figs" / "a.png").is_file()
    assert sorted(p.name for p in out.iterdir()) == ["figs", "thesis.tex"]


def test_overwrite_of_a_run_folder_keeps_other_files(tmp_path, monkeypatch, encoder_dir):
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    out = tmp_path / "run"
    train(_cfg(out, encoder_dir))
    (out / "NOTES.md").write_text("my notes on this run")
    with pytest.raises(UserError, match="already holds a run"):
        train(_cfg(out, encoder_dir))
    train(_cfg(out, encoder_dir, seed=4), overwrite=True)
    assert (out / "NOTES.md").read_text() == "my notes on this run"
    assert json.loads((out / "training_args.json").read_text())["seed"] == 4
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "loss" in r] == [1, 2]  # the old log went with the old run


def test_second_run_on_a_locked_folder_is_refused(tmp_path, monkeypatch, encoder_dir):
    from mclner.training.rundir import RunLock
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    out = tmp_path / "run"
    with RunLock(out):  # a run in progress (its own open file description: flock conflicts in-process too)
        with pytest.raises(UserError) as exc:
            train(_cfg(out, encoder_dir))
        msg = str(exc.value)
        assert "in use by another mclner run" in msg and f"pid {os.getpid()}" in msg and "\n" not in msg
        assert not (out / "log.jsonl").exists()
    train(_cfg(out, encoder_dir))  # released: the folder is usable again
    assert (out / "best").is_dir()
    log = (out / "log.jsonl").read_text()
    with RunLock(out):  # --resume / --overwrite must not attach to a running run either
        for kw in ({"resume": True}, {"overwrite": True}):
            with pytest.raises(UserError, match="in use by another mclner run"):
                train(_cfg(out, encoder_dir), **kw)
    assert (out / "log.jsonl").read_text() == log and (out / "best").is_dir()


def test_lock_is_held_across_processes_and_dropped_on_kill(tmp_path):
    from mclner.training.rundir import RunLock

    out = tmp_path / "run"
    code = ("import sys,time; from mclner.training.rundir import RunLock; RunLock(sys.argv[1]).acquire(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(out)], stdout=subprocess.PIPE, text=True,
                            cwd=NEUTRAL_CWD, env=subprocess_env())
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(UserError, match=f"pid {proc.pid}"):
            RunLock(out).acquire()
    finally:
        proc.kill()  # kill -9: the kernel drops the flock
        proc.wait()
    lock = RunLock(out).acquire()
    lock.release()
