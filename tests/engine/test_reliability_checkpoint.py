"""Checkpoints: no pickle (a planted one never runs), SHA-256 per file, atomic replacement that
survives a kill at each point, half-written DONE files, clear errors for broken weight files and
mixed-up label maps (issue 10 items 1, 3, 9, 10, 11)."""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from mclner_fixtures import make_tiny_encoder_dir, patch_training_data

from mclner.errors import UserError


class Killed(BaseException):
    """Stands for kill -9: nothing after it runs (cleanup code is disabled alongside)."""


class Evil:
    """Unpickling this creates ``path``: proof that a loader ran code from a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


_ENC: list = []
_METHOD: list = []  # the method of the last _model()


def _model(seed: int = 0):
    """An untrained relation model on the tiny encoder (as `mclner train` builds it)."""
    import tempfile

    from mclner_fixtures import relation_model

    from mclner.data.labels import LabelMap

    if not _ENC:
        _ENC.append(make_tiny_encoder_dir(Path(tempfile.mkdtemp(prefix="mclner-enc-")) / "tiny"))
    lm = LabelMap(["LOC", "ORG", "PER"])
    torch.manual_seed(seed)
    method, model, tok = relation_model(_ENC[0], lm)
    _METHOD[:] = [method]
    return model, tok, lm


def _state(model):
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0 / (s + 1))
    model.train()
    p = next(model.parameters())
    (p.float() ** 2).sum().backward()
    opt.step()
    sched.step()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    live = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_interval=7)  # an enabled scaler's state
    live.scale(torch.ones(()))  # initialises the scale tensor
    from mclner.training.state_codec import rng_state

    return opt, sched, {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                        "scaler_live": live.state_dict(),
                        "counters": {"step": 3, "epoch": 1, "batch_pos": 2, "best_f1": -1.0}, "rng": rng_state(),
                        "stage": "source", "nan": float("nan")}


def _save(dest: Path, seed: int = 0, state: bool = True):
    from mclner.training.checkpoint import save_checkpoint

    model, tok, lm = _model(seed)
    ts = _state(model)[2] if state else None
    save_checkpoint(dest, model, tok, lm, {"seed": seed}, method=_METHOD[0], training_state=ts)
    return model


def _weights(path: Path) -> dict:
    from mclner.inference.checkpoint import read_weights

    return read_weights(path)  # model.safetensors + encoder/model.safetensors


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------- item 1: no pickle


def test_training_state_round_trips_without_pickle(tmp_path):
    from mclner.training.state_codec import load_training_state, set_rng_state

    model, _, _ = _model()
    opt, sched, state = _state(model)
    from mclner.training.checkpoint import save_checkpoint

    save_checkpoint(tmp_path / "ck", model, None, _model()[2], {},
                    method=_METHOD[0], training_state=state)
    files = {p.name for p in (tmp_path / "ck").iterdir()}
    assert {"training_state.json", "training_state.safetensors", "checksums.json"} <= files
    assert "training_state.pt" not in files
    for p in (tmp_path / "ck").rglob("*"):  # no pickle anywhere (protocol 2+ starts with 0x80; zip = torch.save)
        if p.is_file():
            head = p.read_bytes()[:2]
            assert head[:1] != b"\x80" and head != b"PK", p
    json.loads((tmp_path / "ck" / "training_state.json").read_text(), parse_constant=lambda c: pytest.fail(c))

    back = load_training_state(tmp_path / "ck")
    assert back["counters"] == state["counters"] and back["stage"] == "source" and np.isnan(back["nan"])
    assert back["scheduler"] == state["scheduler"] and back["scaler"] == state["scaler"]
    assert back["scaler_live"] == state["scaler_live"] and back["scaler_live"]["scale"] > 0
    torch.amp.GradScaler("cpu").load_state_dict(back["scaler_live"])
    so, bo = state["optimizer"], back["optimizer"]
    assert bo["param_groups"] == so["param_groups"]  # tuples (betas) and everything else as they were
    assert set(bo["state"]) == set(so["state"]) and all(isinstance(k, int) for k in bo["state"])
    for k in so["state"]:
        for name, v in so["state"][k].items():
            assert torch.equal(bo["state"][k][name], v), (k, name)
    opt.load_state_dict(bo)  # the real consumers accept them
    sched.load_state_dict(back["scheduler"])

    # RNG states come back exactly: the same draws follow
    set_rng_state(state["rng"])
    want = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    set_rng_state(back["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert want[0] == got[0] and want[1] == got[1] and torch.equal(want[2], got[2])


def _cfg(tmp_path: Path, encoder: str, **kw):
    from mclner_fixtures import train_config

    base = dict(source="synthetic-en", target="synthetic-zh", lexicon="synthetic", encoder=encoder,
                output_dir=str(tmp_path / "run"), batch_size=8, effective_batch_size=8, max_steps=4, eval_every=100,
                save_every=2, biaffine_dim=8, cln_hidden=8, proj_dim=8, progress=False, patience=0, seed=3,
                codeswitch=False, max_eval_sentences=4)
    base.update(kw)
    return train_config(**base)


def test_planted_pickle_training_state_never_runs(tmp_path, monkeypatch, encoder_dir):
    """Item 3: --resume on a folder whose training state is a pickle that would create a file."""
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    cfg = _cfg(tmp_path, encoder_dir, stop_after_steps=2)
    assert train(cfg).get("interrupted")
    last = Path(cfg.output_dir) / "stages" / "source" / "last"
    marker = tmp_path / "pwned"
    for name in ("training_state.json", "training_state.safetensors"):
        (last / name).unlink(missing_ok=True)
    torch.save({"optimizer": Evil(str(marker))}, last / "training_state.pt")
    cfg.stop_after_steps = None
    with pytest.raises(UserError) as exc:
        train(cfg, resume=True)
    assert not marker.exists(), "the planted pickle ran"
    msg = str(exc.value)
    assert "\n" not in msg and "training_state.pt" in msg and "pickle" in msg


# ----------------------------------------------------------------------------- item 10: checksums


def _flip(path: Path, offset_from_end: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("name", ["model.safetensors", "tokenizer.json", "encoder/config.json"])
def test_flipped_byte_is_refused_naming_the_file(tmp_path, name):
    from mclner.inference.checkpoint import load_checkpoint

    _save(tmp_path / "ck")
    _flip(tmp_path / "ck" / name, 3 if name.endswith(".json") else 5)
    with pytest.raises(UserError) as exc:
        load_checkpoint(tmp_path / "ck")
    assert name in str(exc.value) and "SHA-256" in str(exc.value) and "\n" not in str(exc.value)


def test_flipped_byte_in_training_state_is_refused(tmp_path):
    from mclner.training.state_codec import load_training_state

    _save(tmp_path / "ck")
    _flip(tmp_path / "ck" / "training_state.safetensors")
    with pytest.raises(UserError, match="training_state.safetensors.*SHA-256"):
        load_training_state(tmp_path / "ck")


def test_checksummed_folder_loads_and_best_copy_verifies(tmp_path):
    from mclner.inference.checkpoint import load_checkpoint
    from mclner.training.checkpoint import copy_checkpoint, update_model_config

    model = _save(tmp_path / "ck")
    update_model_config(tmp_path / "ck", none_bias=1.5)  # re-checksummed, so it still verifies
    copy_checkpoint(tmp_path / "ck", tmp_path / "best")
    assert not any(p.name.startswith("training_state") for p in (tmp_path / "best").iterdir())
    m2, _, lm, cfg = load_checkpoint(tmp_path / "best")
    assert cfg["model"]["none_bias"] == 1.5 and lm.types == ["LOC", "ORG", "PER"]
    assert _same({k: v for k, v in model.state_dict().items()}, dict(m2.state_dict()))


# ----------------------------------------------------------------------------- item 9: kill at each point


@pytest.mark.parametrize("kill_at", ["dest->old", "tmp->dest", "rmtree old", "writing tmp"])
def test_kill_during_replacement_keeps_a_complete_checkpoint(tmp_path, monkeypatch, kill_at):
    from mclner.inference.checkpoint import load_checkpoint
    from mclner.store.atomic import recover_tree
    from mclner.training.state_codec import has_training_state, load_training_state

    dest = tmp_path / "stages" / "source" / "last"
    _save(dest, seed=0)
    old_w = _weights(dest)
    real_replace = os.replace
    calls = []

    def replace(src, dst, *a, **k):
        if Path(dst) == dest or Path(src) == dest:  # the two renames of the folder swap
            calls.append((Path(src).name, Path(dst).name))
            if (kill_at == "dest->old" and len(calls) == 1) or (kill_at == "tmp->dest" and len(calls) == 2):
                raise Killed
        return real_replace(src, dst, *a, **k)

    def rmtree(path, *a, **k):
        if kill_at == "rmtree old" and ".old-" in str(path):
            raise Killed
        # kill -9 runs no cleanup: folders that a handler would remove stay behind

    def save_file(*a, **k):
        raise Killed

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(shutil, "rmtree", rmtree)
    if kill_at == "writing tmp":
        import safetensors.torch

        real_save = safetensors.torch.save_file
        monkeypatch.setattr(safetensors.torch, "save_file",
                            lambda t, f, metadata=None: (real_save(t, f, metadata=metadata), save_file())
                            if f.endswith("model.safetensors") else real_save(t, f, metadata=metadata))
    with pytest.raises(Killed):
        _save(dest, seed=1)
    monkeypatch.undo()
    leftovers = sorted(p.name for p in dest.parent.iterdir() if p.name != "last")
    assert leftovers, "the simulated kill should leave a .tmp-/.old- folder"

    # a reader finds a complete checkpoint under the name: the new one if the swap finished, else the old
    load_checkpoint(dest)
    assert _same(_weights(dest), old_w) == (kill_at != "rmtree old")
    assert has_training_state(dest)
    assert load_training_state(dest)["counters"]["step"] == 3
    # the resume sweep (and the next save) removes the leftovers
    recover_tree(tmp_path)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["last"]


@pytest.mark.parametrize("failure", ["oserror", "safetensors"])
def test_full_disk_is_one_line_and_keeps_the_old_checkpoint(tmp_path, monkeypatch, failure):
    """A write that fails (a full disk: ENOSPC from the OS, or safetensors' I/O error) is a UserError
    naming the checkpoint and the reason; the checkpoint there before is intact, no temporary is left."""
    import errno

    import safetensors.torch
    from safetensors import SafetensorError

    dest = tmp_path / "stages" / "source" / "last"
    _save(dest, seed=0)
    old_w = _weights(dest)
    real_save = safetensors.torch.save_file

    def full(t, f, metadata=None):
        if f.endswith("training_state.safetensors") or f.endswith("model.safetensors"):
            if failure == "oserror":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(t, f, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", full)
    with pytest.raises(UserError, match=r"cannot write checkpoint .*last: No space left on device.*--resume"):
        _save(dest, seed=1)
    monkeypatch.undo()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["last"]
    assert _same(_weights(dest), old_w)
    # any other error still propagates as itself
    monkeypatch.setattr(safetensors.torch, "save_file", lambda *a, **k: (_ for _ in ()).throw(ValueError("bad")))
    with pytest.raises(ValueError, match="bad"):
        _save(dest, seed=1)


def test_resume_after_kill_between_renames_continues(tmp_path, monkeypatch, encoder_dir, capsys):
    """The old `last` sits under `.last.old-*` (and a half-written `.last.tmp-*` beside it): --resume
    continues from it instead of silently starting again at step 1."""
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    cfg = _cfg(tmp_path, encoder_dir, stop_after_steps=3)  # last written at step 2
    assert train(cfg).get("interrupted")
    sdir = Path(cfg.output_dir) / "stages" / "source"
    os.replace(sdir / "last", sdir / ".last.old-0123abcd")
    (sdir / ".last.tmp-89abcdef").mkdir()
    (sdir / ".last.tmp-89abcdef" / "config.json").write_text("{")
    cfg.stop_after_steps = None
    capsys.readouterr()
    train(cfg, resume=True)
    assert "resumed from" in capsys.readouterr().out
    rows = [json.loads(x) for x in (Path(cfg.output_dir) / "log.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in rows if "loss" in r]
    assert steps == [1, 2, 3, 3, 4], steps  # steps 1-3, then 3-4 again from the step-2 checkpoint
    assert sorted(p.name for p in sdir.iterdir()) == ["DONE", "best", "last"]


def test_half_written_done_is_recovered(tmp_path, monkeypatch, encoder_dir):
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    cfg = _cfg(tmp_path, encoder_dir)
    first = train(cfg)
    done = Path(cfg.output_dir) / "stages" / "source" / "DONE"
    text = done.read_text()
    done.write_text(text[: len(text) // 2])  # killed while writing it
    again = train(cfg, resume=True)
    assert again["stages"]["source"]["steps"] == first["stages"]["source"]["steps"] == 4
    assert json.loads(done.read_text())["steps"] == 4
    assert again["final"]["target_test"]["f1"] == first["final"]["target_test"]["f1"]


# ----------------------------------------------------------------------------- item 11: clear errors


def _rerecord(path: Path) -> None:
    """Record the checksums again after an edit, so that the edit reaches the loader's own checks."""
    from mclner.store.checksums import write_checksums

    (path / "checksums.json").unlink()
    write_checksums(path)


@pytest.mark.parametrize("damage", ["empty", "truncated", "lying header", "garbage"])
def test_broken_weights_file_is_one_line(tmp_path, capsys, damage):
    from mclner.cli import main

    _save(tmp_path / "ck", state=False)
    f = tmp_path / "ck" / "model.safetensors"
    data = f.read_bytes()
    if damage == "empty":
        f.write_bytes(b"")
    elif damage == "truncated":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "lying header":
        f.write_bytes((10**12).to_bytes(8, "little") + data[8:])
    else:
        f.write_bytes(b"\x00" * 64)
    _rerecord(tmp_path / "ck")  # past the checksum check: the reader itself must refuse the file
    capsys.readouterr()
    rc = main(["predict", str(tmp_path / "ck"), "-i", os.devnull])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "model.safetensors" in err[0], err


def test_swapped_label_map_is_refused(tmp_path):
    from mclner.inference.checkpoint import load_checkpoint

    _save(tmp_path / "ck", state=False)
    cfg = json.loads((tmp_path / "ck" / "config.json").read_text())
    cfg["label_map"]["types"] = ["ORG", "LOC", "PER"]  # class ids 2 and 3 would change meaning
    (tmp_path / "ck" / "config.json").write_text(json.dumps(cfg))
    _rerecord(tmp_path / "ck")  # with matching checksums only the cross-check can see it
    with pytest.raises(UserError, match="label_map"):
        load_checkpoint(tmp_path / "ck")
    # with checksums, the edit itself is caught
    _save(tmp_path / "ck2", state=False)
    lm = tmp_path / "ck2" / "label_map.json"
    lm.write_text(json.dumps({"types": ["ORG", "LOC", "PER"]}))
    with pytest.raises(UserError, match="label_map.json"):
        load_checkpoint(tmp_path / "ck2")


@pytest.mark.parametrize("state", [{"__dict__": 5}, {"__tuple__": 3}, {"a": {"__tensor__": "t999"}}, "[" * 100000])
def test_malformed_training_state_is_one_line(tmp_path, state):
    from mclner.store.checksums import write_checksums
    from mclner.training.state_codec import STATE_FORMAT, load_training_state

    _save(tmp_path / "ck")
    f = tmp_path / "ck" / "training_state.json"
    f.write_text(state if isinstance(state, str) else json.dumps({"format": STATE_FORMAT, "version": 1,
                                                                 "state": state}))
    write_checksums(tmp_path / "ck")  # consistent files: only the content is wrong
    with pytest.raises(UserError) as exc:
        load_training_state(tmp_path / "ck")
    assert "training_state" in str(exc.value) and "\n" not in str(exc.value)
