"""Nothing unlisted is read (issue 25 items 2, 3): a checkpoint is loaded only from the files its
checksums.json lists, symlinks that lead out of a checkpoint are refused, and the embedded sources
and converted encoders under MCLNER_HOME are checked against their recorded hashes when used."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from mclner_fixtures import make_tiny_encoder_dir

from mclner.errors import UserError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    import torch
    from mclner_fixtures import relation_model

    from mclner.data.labels import LabelMap
    from mclner.training.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("trust-files")
    enc = make_tiny_encoder_dir(root / "enc")
    lm = LabelMap(["LOC", "ORG", "PER"])
    torch.manual_seed(0)
    method, model, tok = relation_model(enc, lm)
    return save_checkpoint(root / "best", model, tok, lm, {}, method=method)


@pytest.fixture()
def ckpt(saved, tmp_path):
    """A fresh copy of the saved checkpoint, free to be edited."""
    return Path(shutil.copytree(saved, tmp_path / "ckpt"))


def _tokens(path):
    from mclner.inference import load_model

    lm = load_model(path, "cpu")
    return lm.tokenizer("Angela Merkel visited Paris")["input_ids"], lm.tokenizer.cls_token


@pytest.mark.parametrize("name, content", [
    ("special_tokens_map.json", {"cls_token": "visited"}),
    ("added_tokens.json", {"Merkel visited": 5000}),
    ("encoder/generation_config.json", {"bos_token_id": 3}),
])
def test_an_unlisted_file_is_refused(ckpt, name, content):
    """A file added after saving (even one transformers would read, changing the tokenisation) is an
    error naming it, not silently used."""
    before = _tokens(ckpt)
    (ckpt / name).write_text(json.dumps(content))
    with pytest.raises(UserError, match=f"{ckpt / name}: not listed in"):
        _tokens(ckpt)
    (ckpt / name).unlink()
    assert _tokens(ckpt) == before


def test_a_symlink_out_of_the_checkpoint_is_refused(ckpt, tmp_path):
    """A listed file replaced by a link to an identical file elsewhere (the checksums still match), or
    a link to a folder outside: refused, naming the link."""
    outside = tmp_path / "outside.json"
    shutil.copy(ckpt / "label_map.json", outside)
    (ckpt / "label_map.json").unlink()
    os.symlink(outside, ckpt / "label_map.json")
    with pytest.raises(UserError, match="label_map.json: a symbolic link to .* outside the checkpoint"):
        _tokens(ckpt)
    from mclner.inference.checkpoint import read_config

    with pytest.raises(UserError, match="outside the checkpoint"):
        read_config(ckpt)


def test_a_symlinked_folder_out_of_the_checkpoint_is_refused(ckpt, tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0\n")
    os.symlink(tmp_path / "etc", ckpt / "etc")
    with pytest.raises(UserError, match="etc: a symbolic link to .* outside the checkpoint"):
        _tokens(ckpt)


def test_a_checkpoint_folder_that_is_a_link_is_fine(ckpt, tmp_path):
    """A checkpoint folder that is itself a link (runs/x/best -> elsewhere) is as good as the folder."""
    link = tmp_path / "linked-best"
    os.symlink(ckpt, link)
    assert _tokens(link) == _tokens(ckpt)
