"""Figures and reports, round two (issue 29 §2, issue 25 §11, issue 26 viz items): CJK labels drawn with an
installed CJK font, per-type bars that tell 0 from not scored, curves whose legend leaves the last
points visible, `compare` on runs scored on different data, one-line errors for damaged run files, the
HTML report (checked in headless Chromium where it is installed) and its Reproduce commands."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_viz import write_run

from mclner.cli import main

needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                               reason='matplotlib not installed (pip install "mclner[viz]")')


def _glyph(ch: str, family) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.6, 0.6), dpi=100)
    canvas = FigureCanvasAgg(fig)
    fig.text(0.5, 0.5, ch, ha="center", va="center", fontsize=28, family=family)
    with warnings.catch_warnings():  # the tofu reference glyphs (private-use code points) are missing on purpose
        warnings.filterwarnings("ignore", message="Glyph .* missing from font", category=UserWarning)
        canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., 0].copy()


@needs_mpl
def test_chinese_labels_render_with_an_installed_cjk_font(tmp_path):
    import matplotlib

    from mclner.viz.canvas import cjk_fonts, rc_settings
    from mclner.viz.plots import MatrixPanel, plot_matrices

    fonts = cjk_fonts()
    if not fonts:
        pytest.skip("no CJK font installed (Debian: apt-get install fonts-noto-cjk)")
    with matplotlib.rc_context(rc_settings(0)):
        family = matplotlib.rcParams["font.family"]
        bei, jing, box1, box2 = (_glyph(c, family) for c in ("北", "京", "\ue000", "\ue001"))
    assert (box1 == box2).all()  # characters without a glyph draw the same box ...
    assert not (bei == jing).all() and not (bei == box1).all()  # ... Chinese ones do not
    words = ["李", "明", "在", "北京"]
    res = plot_matrices([MatrixPanel(np.eye(4), words, words, "视图")], tmp_path / "zh")
    assert "missing_glyphs" not in res.data
    assert res.data["axes"][0]["xticklabels"] == words


@needs_mpl
def test_per_type_bars_tell_zero_from_not_scored(tmp_path):
    from mclner.viz.plots import plot_per_type
    from mclner.viz.runs import scores_table

    s = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 4}
    zero = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    table = scores_table({"a": {**s, "per_type": {"LOC": s, "PER": zero}},
                          "b": {**s, "per_type": {"LOC": s}}})
    res = plot_per_type(table, tmp_path / "pt")
    marks = {(m["run"], m["type"]): m["mark"] for m in res.data["marks"]["f1"]}
    assert marks == {("a", "PER"): "0", ("b", "PER"): "n/s"}
    svg = (tmp_path / "pt.svg").read_text(encoding="utf-8")
    assert "n/s: not scored by that run" in svg


@needs_mpl
def test_curves_legend_leaves_the_last_points_visible(tmp_path):
    from mclner.viz.plots import plot_training_curves
    from mclner.viz.runs import read_log, training_curves

    write_run(tmp_path / "r", seed=4)
    res = plot_training_curves(training_curves(read_log(tmp_path / "r")), tmp_path / "c")
    assert all(ax["legend_covers_last_points"] == [] for ax in res.data["axes"])
    assert all(ax["legend"] for ax in res.data["axes"])


def test_compare_warns_when_runs_were_scored_on_different_data(tmp_path, capsys):
    write_run(tmp_path / "a", seed=1)
    write_run(tmp_path / "b", seed=2)
    for name, k in (("a", None), ("b", 500)):
        (tmp_path / name / "training_args.json").write_text(json.dumps(
            {"method": "mclner" if name == "a" else "concner", "target": "msra-zh", "max_eval_sentences": k}))
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    res["final"]["target_test"]["support"] = 60
    (tmp_path / "b" / "results.json").write_text(json.dumps(res))
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    cap = capsys.readouterr()
    assert "warning: the runs were scored on different data" in cap.err and "60 entities" in cap.err
    assert "| a | mclner | msra-zh test |" in cap.out and "| b | concner | msra-zh test (first 500) |" in cap.out
    write_run(tmp_path / "c", seed=1)
    (tmp_path / "c" / "training_args.json").write_text((tmp_path / "a" / "training_args.json").read_text())
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--json"]) == 0
    cap = capsys.readouterr()
    assert "warning" not in cap.err and json.loads(cap.out)["scored_on_different_data"] is False


# ----------------------------------------------------------------------------- damaged run files (issue 25 §11)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00garbage\n", b'{"stage": "source", "step": 1}\n\x80\x81\n'])
def test_binary_log_is_one_line(tmp_path, capsys, content):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "log.jsonl").write_bytes(content)
    capsys.readouterr()
    assert main(["plot", "curves", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "log.jsonl:" in err and "not UTF-8" in err


@pytest.mark.parametrize("results,field", [
    ({"final": []}, "'final' must be an object"),
    ({"final": {"target_test": 0.5}}, "final.target_test: expected an object of scores"),
    ({"final": {"target_test": {"recall": 0.1, "f1": 0.1}}}, "final.target_test: precision must be a number"),
    ({"final": {"target_test": {"precision": "x", "recall": 0.1, "f1": 0.1}}}, "precision must be a number"),
    ({"final": {"target_test": {"precision": 0.1, "recall": 0.1, "f1": 0.1, "support": "7"}}}, "support must be a"),
    ({"final": {"target_test": {"precision": 0.1, "recall": 0.1, "f1": 0.1, "per_type": []}}}, "per_type must be"),
    ({"final": {"target_test": {"precision": 0.1, "recall": 0.1, "f1": 0.1, "per_type": {"PER": None}}}},
     "per_type.PER: expected an object"),
    ({"final": {"target_test": {"precision": 0.1, "recall": 0.1, "f1": 0.1}}, "stages": [1]}, "'stages' must be"),
    ([1, 2], "not a JSON object"),
])
def test_wrongly_typed_results_are_one_line(tmp_path, capsys, results, field):
    write_run(tmp_path / "r", seed=1)
    (tmp_path / "r" / "results.json").write_text(json.dumps(results))
    for argv in (["compare", str(tmp_path / "r")], ["plot", "per-type", str(tmp_path / "r")],
                 ["report", str(tmp_path / "r"), "--no-model"]):
        (tmp_path / "r" / "training_args.json").write_text("{}")
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "results.json" in err and field in err, (argv, err)


def test_plot_output_in_a_missing_folder_is_refused_not_created(tmp_path, capsys):
    write_run(tmp_path / "r", seed=1)
    missing = tmp_path / "nonexistent"
    for argv in (["plot", "curves", str(tmp_path / "r"), "-o", str(missing / "deeper" / "x")],
                 ["plot", "curves", str(tmp_path / "r"), "-o", str(missing / "x")],
                 ["plot", "per-type", str(tmp_path / "r"), "-o", str(missing / "x")],
                 ["compare", str(tmp_path / "r"), "--plot", str(missing / "x")]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "does not exist" in err, err
        assert not missing.exists()
    if not Path("/nonexistent").exists():
        assert main(["plot", "curves", str(tmp_path / "r"), "-o", "/nonexistent/x"]) == 2
        assert not Path("/nonexistent").exists()
    if importlib.util.find_spec("matplotlib") is not None:  # the default output folder is made
        assert main(["plot", "curves", str(tmp_path / "r")]) == 0
        assert (tmp_path / "r" / "plots" / "curves.png").is_file()


# ----------------------------------------------------------------------------- the HTML report


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """A real (tiny) relation run and its report."""
    import contextlib
    import io

    from mclner_golden_losses import make_inputs

    root = tmp_path_factory.mktemp("rep")
    paths = make_inputs(root)
    run = root / "rel"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh", "--lexicon",
                     paths["lex"], "--encoder", paths["enc"], "--output-dir", str(run), "--max-steps", "4",
                     "--batch-size", "4", "--effective-batch-size", "8", "--eval-every", "2", "--seed", "3",
                     "--self-training-rounds", "0", "--biaffine-dim", "16", "--cln-hidden", "16", "--proj-dim", "8",
                     "--tc-max-pairs", "64", "--cs-word-ratio", "0.6", "--no-progress"]) == 0
        rc = main(["report", str(run), "--max-sentences", "5"])
    assert rc == 0
    return run


@needs_mpl
def test_report_is_a_self_contained_page(reported):
    page = (reported / "report.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    imgs = re.findall(r'<img alt="([^"]+)" src="([^"]+)"', page)
    assert {a for a, _ in imgs} >= {"Training curves", "Per-type scores (target test)", "Entity representations",
                                    "Entity-type confusion (target test)", "Relation similarity (views A/B)"}
    assert all(src.startswith("data:image/") for _, src in imgs)
    assert not re.search(r'(src|href)="(?!data:)', page)  # nothing fetched from elsewhere
    assert "<h3>Per-type scores, target test</h3>" in page and "<h2>Options</h2>" in page
    assert page.count('<div class="sentence">') == 5 and '<mark class="entity"' in page  # --max-sentences 5
    assert "cs_word_ratio" in page and "<script" not in page
    assert (reported / "report.md").is_file()


def test_reproduce_never_deletes_the_run(reported):
    from mclner.viz.report import reproduce_commands

    args = json.loads((reported / "training_args.json").read_text())
    for text in ((reported / "report.md").read_text(), (reported / "report.html").read_text()):
        assert "--overwrite" not in text
    train = reproduce_commands(reported, args)[0].split()
    assert train[train.index("--output-dir") + 1] == f"{reported}-reproduced"
    assert "--cs-word-ratio 0.6" in " ".join(train)


@needs_mpl
def test_report_heatmap_uses_the_runs_resolved_options(reported):
    """viz/report.py read the explicitly given method_options and fell back to 0.3 where the shared
    figure now reads the checkpoint's resolved method_config: both the CLI and the report draw it."""
    from mclner.inference import load_model
    from mclner.viz.figures import switch_ratio

    lm = load_model(reported / "best", "cpu")
    assert switch_ratio(lm) == 0.6
    heat = json.loads((reported / "plots" / "heatmap.json").read_text(encoding="utf-8"))
    assert heat["title"].startswith("relation similarity of source test sentence ")  # names its sentence
    assert "“" in heat["title"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return ""


def _headless(page: Path, tmp: Path, shot: Path) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp}", "--enable-logging=stderr", "--v=0", "--window-size=1200,2400",
             "--hide-scrollbars", f"--screenshot={shot}", page.resolve().as_uri()]
    return subprocess.run([_chromium(), *flags], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOME": str(tmp)})


def _console_errors(stderr: str) -> list:
    return [ln for ln in stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]


@needs_mpl
@pytest.mark.skipif(not _chromium(), reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_report_page_in_headless_chromium(reported, tmp_path):
    import matplotlib.image as mpimg

    # the check sees a console error where there is one
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><p>x</p><script>console.error('broken page')</script></body></html>")
    res = _headless(bad, tmp_path / "p0", tmp_path / "bad.png")
    assert any("broken page" in ln for ln in _console_errors(res.stderr)), res.stderr[-2000:]
    shot = tmp_path / "report.png"
    res = _headless(reported / "report.html", tmp_path / "p1", shot)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_errors(res.stderr) == []
    img = mpimg.imread(str(shot))
    assert img.shape[0] >= 2000 and img.shape[1] >= 1000
    grey = img[..., :3].mean(-1)
    assert grey.std() > 0.05 and (grey < 0.5).mean() > 0.002  # not blank: text and figures drawn
    keep = os.environ.get("MCLNER_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
