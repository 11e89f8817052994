"""Nothing from a file runs (issue 25 item 1): a checkpoint's encoder/config.json or its
tokenizer_config.json, or a planted encoder folder under MCLNER_HOME, that names custom code
(``auto_map``, an unknown ``model_type``) is refused with one line naming the file, whatever stdin
answers; the planted code would create a marker file, which must never appear. And an ``--encoder``
folder of pickled weights is refused (item 14)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mclner_fixtures import make_tiny_encoder_dir

from mclner.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _code(marker: Path) -> str:
    """Python that creates ``marker`` when imported: proof that a loader ran code from a folder."""
    return f"open({str(marker)!r}, 'w').write('ran')\n"


@pytest.fixture()
def ckpt(tmp_path):
    import torch
    from mclner_fixtures import relation_model

    from mclner.data.labels import LabelMap
    from mclner.training.checkpoint import save_checkpoint

    enc = make_tiny_encoder_dir(tmp_path / "enc")
    lm = LabelMap(["LOC", "ORG", "PER"])
    torch.manual_seed(0)
    method, model, tok = relation_model(enc, lm)
    return save_checkpoint(tmp_path / "best", model, tok, lm, {}, method=method)


def _rewrite_json(path: Path, **fields) -> None:
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


def _plant_encoder_config(folder: Path, marker: Path) -> None:
    """An encoder config of a model type transformers does not know, with code beside it that
    transformers would import (``auto_map``) once the user agrees."""
    _rewrite_json(folder / "config.json", model_type="evilbert",
                  auto_map={"AutoConfig": "configuration_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"})
    (folder / "configuration_evil.py").write_text(_code(marker) + "from transformers import BertConfig\n"
                                                 "class EvilConfig(BertConfig):\n    model_type = 'evilbert'\n")
    (folder / "modeling_evil.py").write_text(_code(marker) + "from transformers import BertModel as EvilModel\n")


def _plant_tokenizer_config(folder: Path, marker: Path) -> None:
    _rewrite_json(folder / "tokenizer_config.json",
                  auto_map={"AutoTokenizer": ["tokenization_evil.EvilTokenizer", "tokenization_evil.EvilTokenizer"]})
    (folder / "tokenization_evil.py").write_text(
        _code(marker) + "from transformers import PreTrainedTokenizerFast as EvilTokenizer\n")


def _cli(args, stdin: str, env=None, cwd=None) -> subprocess.CompletedProcess:
    """``python -m mclner ARGS`` with ``stdin``, as a user at a shell (the installed package)."""
    env = {**os.environ, **(env or {}), "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)
    return subprocess.run([sys.executable, "-m", "mclner", *args], input=stdin, text=True, capture_output=True,
                          env=env, cwd=cwd, timeout=600)


def _one_line_error(proc: subprocess.CompletedProcess, *expect: str) -> str:
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert all(e in lines[-1] for e in expect), lines[-1]
    return lines[-1]


def test_checkpoint_encoder_config_with_custom_code_never_runs(ckpt, tmp_path):
    from mclner.store.checksums import write_checksums

    marker = tmp_path / "MARKER-encoder"
    _plant_encoder_config(ckpt / "encoder", marker)
    write_checksums(ckpt)  # consistent, as an attacker would ship it
    proc = _cli(["predict", str(ckpt)], "y\nAngela Merkel visited Paris .\n", cwd=tmp_path)
    assert not marker.exists(), "code from the checkpoint ran"
    _one_line_error(proc, str(ckpt / "encoder" / "config.json"))


def test_checkpoint_tokenizer_config_with_custom_code_never_runs(ckpt, tmp_path):
    from mclner.store.checksums import write_checksums

    marker = tmp_path / "MARKER-tokenizer"
    _plant_tokenizer_config(ckpt, marker)
    write_checksums(ckpt)
    proc = _cli(["predict", str(ckpt)], "y\nAngela Merkel visited Paris .\n", cwd=tmp_path)
    assert not marker.exists(), "code from the checkpoint ran"
    # the file is also linked as encoder/tokenizer_config.json, which is checked first
    _one_line_error(proc, str(ckpt), "tokenizer_config.json: names custom code (auto_map)")


def test_planted_embedded_encoder_never_runs(tmp_path, task_files):
    """A folder planted as ``$MCLNER_HOME/encoders/tiny-multilingual`` (it looks converted) with code:
    `mclner train` refuses it before any stage, and nothing is copied into a checkpoint."""
    _, paths = task_files
    home = tmp_path / "home"
    planted = home / "encoders" / "tiny-multilingual"
    make_tiny_encoder_dir(planted)
    (planted / "mclner_converted.json").write_text(json.dumps({"converter_version": 2}))
    marker = tmp_path / "MARKER-home"
    _plant_encoder_config(planted, marker)
    _plant_tokenizer_config(planted, marker)
    from mclner.store.checksums import write_checksums

    write_checksums(planted)  # consistent, so that the folder is taken as a finished conversion
    out = tmp_path / "run"
    proc = _cli(["train", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh", "--lexicon",
                 paths["lex"], "--encoder", "tiny-multilingual", "--output-dir", str(out), "--max-steps", "1",
                 "--batch-size", "4", "--no-progress"], "y\n" * 50, env={"MCLNER_HOME": str(home)}, cwd=tmp_path)
    assert not marker.exists(), "code from MCLNER_HOME ran"
    _one_line_error(proc, str(planted))
    assert not (out / "best").exists()


def test_load_encoder_refuses_custom_code_in_process(tmp_path, monkeypatch):
    """The library entry points too (no stdin involved): each planted file is named."""
    from mclner.encoders import load_encoder

    marker = tmp_path / "MARKER-lib"
    enc = Path(make_tiny_encoder_dir(tmp_path / "enc"))
    _plant_tokenizer_config(enc, marker)
    monkeypatch.setattr("sys.stdin", open(os.devnull))
    with pytest.raises(UserError, match="tokenizer_config.json.*auto_map"):
        load_encoder(str(enc))
    enc2 = Path(make_tiny_encoder_dir(tmp_path / "enc2"))
    _plant_encoder_config(enc2, marker)
    with pytest.raises(UserError, match="config.json"):
        load_encoder(str(enc2))
    assert not marker.exists()


def test_encoder_folder_of_pickled_weights_is_refused(tmp_path):
    """``--encoder DIR`` with ``pytorch_model.bin`` (a pickle) and no safetensors: one line saying that
    only safetensors encoders are loaded (no advice to unpickle)."""
    import torch

    from mclner.encoders import load_encoder

    enc = Path(make_tiny_encoder_dir(tmp_path / "enc"))
    from safetensors.torch import load_file

    state = load_file(str(enc / "model.safetensors"))
    (enc / "model.safetensors").unlink()
    torch.save(state, enc / "pytorch_model.bin")
    with pytest.raises(UserError) as err:
        load_encoder(str(enc))
    msg = str(err.value)
    assert "safetensors" in msg and "pytorch_model.bin" in msg and "weights_only" not in msg, msg
