"""Help and small things (issue 29 §4): what --preset quick sets, one line with "did you mean" for a
mistyped method, an HF data set without network failing at once, the viz extra named alike."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from mclner.cli import main
from mclner.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _help(capsys, *argv: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    return re.sub(r"\s+", " ", capsys.readouterr().out)


def test_train_help_shows_what_the_quick_preset_sets(capsys):
    text = _help(capsys, "train")
    assert "--calibrate-none-bias" in text
    assert re.search(r"--calibrate-none-bias.*?\(default: off\) \(--preset quick: on\)", text)
    assert re.search(r"--max-steps.*?\(--preset quick: 250\)", text)
    assert re.search(r"--freeze-embeddings.*?\(--preset quick: on\)", text)
    assert re.search(r"--kd-max-steps.*?\(--preset quick: 100\)", text)


@pytest.mark.parametrize("argv,want", [
    (["train", "--method", "mcner"], "unknown method 'mcner' (did you mean 'mclner'?)"),
    (["train", "--method", "token_classification"], "did you mean 'token-classification'?"),
    (["train", "--preset", "quik"], "unknown preset 'quik' (did you mean 'quick'?)"),
])
def test_a_mistyped_choice_is_one_line_with_a_suggestion(capsys, argv, want):
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and want in err and "--help" in err


def test_hub_dataset_without_network_fails_fast(monkeypatch):
    from mclner.data import hub
    from mclner.data.readers import load_sentences

    monkeypatch.setattr(hub, "_REACHABLE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    t0 = time.monotonic()
    with pytest.raises(UserError) as e:
        load_sentences("wikiann:qqq-none", split="test")
    assert time.monotonic() - t0 < 15
    assert "cannot be reached" in str(e.value) and "\n" not in str(e.value)


def test_offline_flags_are_restored(monkeypatch):
    import datasets.config as dcfg
    import huggingface_hub.constants as hcon

    from mclner.data import hub

    monkeypatch.setattr(hub, "_REACHABLE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    before = (dcfg.HF_HUB_OFFLINE, hcon.HF_HUB_OFFLINE)
    with hub.offline_unless_reachable() as offline:
        assert offline and dcfg.HF_HUB_OFFLINE and hcon.HF_HUB_OFFLINE
    assert (dcfg.HF_HUB_OFFLINE, hcon.HF_HUB_OFFLINE) == before


def test_the_viz_extra_is_named_alike_in_the_message_and_the_docs(monkeypatch):
    import builtins

    from mclner.viz.plots import _matplotlib

    real = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(name)
        return real(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    with pytest.raises(UserError) as e:
        _matplotlib()
    command = re.search(r"pip install \S+", str(e.value)).group(0)
    assert command == 'pip install "mclner[viz]"'
    for doc in ("README.md", "docs/USAGE.md"):
        assert command in (ROOT / doc).read_text(encoding="utf-8"), doc
