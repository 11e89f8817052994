"""`evaluate` / `predict` on awkward input: folders and missing folders as paths, a file as
MCLNER_HOME, bad devices, entity types the model never saw, token-only CoNLL input, a byte order
mark (issue 10 items 11, 13)."""

from __future__ import annotations

import json
import os

import pytest
from mclner_fixtures import make_tiny_encoder_dir

from mclner.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """An (untrained) relation-model checkpoint on the tiny encoder: enough to exercise the CLI."""
    import torch
    from mclner_fixtures import relation_model

    from mclner.data.labels import LabelMap
    from mclner.training.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("cli-rel")
    enc = make_tiny_encoder_dir(root / "enc")
    lm = LabelMap(["LOC", "ORG", "PER"])
    torch.manual_seed(0)
    method, model, tok = relation_model(enc, lm)
    return save_checkpoint(root / "best", model, tok, lm, {}, method=method)


def _one_line(capsys, argv, expect):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and expect in err[0], err
    return err[0]


def test_predict_input_folder_is_one_line(ckpt, capsys, tmp_path):
    _one_line(capsys, ["predict", str(ckpt), "-i", str(tmp_path)], "is a folder")
    _one_line(capsys, ["predict", str(ckpt), "-i", str(tmp_path), "--input-format", "conll"], "directory")


def test_predict_output_folder_or_missing_folder_is_one_line(ckpt, capsys, tmp_path):
    src = tmp_path / "in.txt"
    src.write_text("John went to Paris\n", encoding="utf-8")
    _one_line(capsys, ["predict", str(ckpt), "-i", str(src), "-o", str(tmp_path)], "is a folder")
    _one_line(capsys, ["predict", str(ckpt), "-i", str(src), "-o", "/nonexistent/x"], "does not exist")


def test_predict_output_is_replaced_only_when_done(ckpt, capsys, tmp_path):
    src, out = tmp_path / "in.txt", tmp_path / "out.jsonl"
    src.write_text("John went to Paris\n\nthe UN\n", encoding="utf-8")
    out.write_text("previous results\n")
    _one_line(capsys, ["predict", str(ckpt), "-i", str(tmp_path / "none.txt"), "-o", str(out)], "no such file")
    assert out.read_text() == "previous results\n"  # a failed run leaves the old output alone
    assert main(["predict", str(ckpt), "-i", str(src), "-o", str(out)]) == 0
    # one record per input line: the blank line gives an empty one
    assert [json.loads(x)["tokens"] for x in out.read_text().splitlines()] == [["John", "went", "to", "Paris"], [],
                                                                               ["the", "UN"]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.jsonl"]


def test_mclner_home_is_a_file(ckpt, capsys, tmp_path, monkeypatch):
    f = tmp_path / "home"
    f.write_text("not a folder")
    monkeypatch.setenv("MCLNER_HOME", str(f))
    _one_line(capsys, ["evaluate", str(ckpt), "msra-zh"], "MCLNER_HOME")
    monkeypatch.setenv("MCLNER_HOME", str(f / "below"))
    _one_line(capsys, ["data", "list"], "is a file, not a folder")


@pytest.mark.parametrize("device", ["foo", "meta", "cuda:99"])
def test_bad_device_is_one_line(ckpt, capsys, tmp_path, device):
    data = tmp_path / "d.conll"
    data.write_text("John\tB-PER\n\n", encoding="utf-8")
    _one_line(capsys, ["predict", str(ckpt), "-i", os.devnull, "--device", device], "--device")
    _one_line(capsys, ["evaluate", str(ckpt), str(data), "--device", device], "--device")


def test_evaluate_scores_unknown_gold_types_as_missed(ckpt, capsys, tmp_path):
    data = tmp_path / "d.conll"
    data.write_text("John\tB-PER\nwent\tO\nto\tO\nEU\tB-MISC\n\nParis\tB-LOC\n\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), str(data), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["unknown_types"] == ["MISC"]
    assert res["per_type"]["MISC"]["recall"] == 0.0 and res["per_type"]["MISC"]["support"] == 1
    assert res["support"] == 3  # the MISC entity counts against recall
    assert main(["evaluate", str(ckpt), str(data)]) == 0
    assert "gold types the model does not know (scored as missed): MISC" in capsys.readouterr().out


def test_predict_conll_ignores_tags_and_accepts_token_only(ckpt, capsys, tmp_path):
    tokens_only = tmp_path / "t.conll"
    tokens_only.write_text("John\nwent\n\nParis\n", encoding="utf-8")
    odd_tags = tmp_path / "o.conll"
    odd_tags.write_text("John\tB-FOO\nwent\tX\n\nParis\tS-LOC\n", encoding="utf-8")
    for f in (tokens_only, odd_tags):
        capsys.readouterr()
        assert main(["predict", str(ckpt), "-i", str(f), "--input-format", "conll"]) == 0
        rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
        assert [r["tokens"] for r in rows] == [["John", "went"], ["Paris"]]


def test_predict_strips_a_byte_order_mark(ckpt, capsys, tmp_path):
    f = tmp_path / "bom.txt"
    f.write_bytes("\ufeffJohn went to Paris\n".encode("utf-8"))
    capsys.readouterr()
    assert main(["predict", str(ckpt), "-i", str(f)]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["tokens"][0] == "John"
