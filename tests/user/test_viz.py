"""Plots and run comparison: each figure rendered from small synthetic data in the trainer's formats;
the tests check the data behind the files (points, shapes, labels, legends), not only that they exist."""

from __future__ import annotations

import importlib.util
import json
import random
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from mclner.cli import main
from mclner.errors import UserError
from mclner.viz.confusion import entity_confusion
from mclner.viz.runs import compare_markdown, per_type_table, read_log, run_names, training_curves

# ----------------------------------------------------------------------------- synthetic run folders


def _step(stage, step, rng, with_cl=True):
    rec = {"stage": stage, "step": step, "epoch": (step - 1) // 4, "ce_src": rng.uniform(0.1, 2)}
    if with_cl:
        rec.update({"ce_cs": rng.uniform(0.1, 2), "sc": rng.uniform(1, 3), "tc": rng.uniform(3, 5),
                    "tc_pairs": float(rng.randint(30, 60))})
    if stage != "source":
        rec.update({"ce_tgt": rng.uniform(0.1, 1), "mse": rng.uniform(0, 0.2)})
    rec["loss"] = sum(v for k, v in rec.items() if k in ("ce_src", "ce_cs", "sc", "tc", "ce_tgt", "mse"))
    rec.update({"grad_norm": rng.uniform(1, 10), "lr_encoder": 1e-4, "lr_head": 1e-3, "elapsed_s": 0.1 * step})
    return rec


def write_run(path, seed=0, stages=(("source", 12), ("st1", 8)), types=("LOC", "ORG", "PER"), resume_at=None):
    """A run folder as `mclner train` writes it: log.jsonl (data, steps, evals every 4 steps, calibration,
    pseudo-label counts, final) and results.json; ``resume_at`` repeats source steps after a restart."""
    rng = random.Random(seed)
    path.mkdir(parents=True, exist_ok=True)
    recs = [{"event": "data", "train": 32, "dev": 8, "target_test": 8, "target_unlabeled": 24,
             "types": list(types), "impl": "reference"}]
    for stage, n in stages:
        if stage != "source":
            recs.append({"event": "pseudo_labels", "stage": stage, "unlabeled": 24, "has_entity": 3,
                         "continuous": 3, "confident": 2})
        for s in range(1, n + 1):
            recs.append(_step(stage, s, rng))
            if s % 4 == 0:
                recs.append({"event": "eval", "stage": stage, "step": s, "epoch": s // 4, "dev_f1": rng.random(),
                             "dev_precision": rng.random(), "dev_recall": rng.random()})
            if resume_at is not None and stage == "source" and s == resume_at:
                # the process died after step resume_at; the resumed run re-logs from the last checkpoint
                recs.append(recs[0])
                for s2 in range(resume_at - 1, resume_at + 1):
                    recs.append(_step(stage, s2, rng))
        recs.append({"event": "calibration", "stage": stage, "none_bias": 2.0, "dev_f1": {"0.0": 0.1, "2.0": 0.3}})
    recs.append({"event": "final", "source_dev": 0.5, "target_test": 0.25})
    (path / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))

    def scores():
        per = {t: {"precision": rng.random(), "recall": rng.random(), "f1": rng.random(), "support": 5 + i}
               for i, t in enumerate(types)}
        return {"precision": rng.random(), "recall": rng.random(), "f1": rng.random(),
                "support": sum(r["support"] for r in per.values()), "per_type": per, "dropped_types": [],
                "sentences": 8}

    results = {"stages": {s: {"steps": n, "epochs": 3, "best_dev_f1": 0.5, "early_stopped": False}
                          for s, n in stages},
               "final": {"source_dev": scores(), "target_test": scores()}}
    (path / "results.json").write_text(json.dumps(results, indent=2))
    return results


# ----------------------------------------------------------------------------- data (no matplotlib)


def test_training_curves_from_log(tmp_path):
    write_run(tmp_path / "run", resume_at=6)
    recs = read_log(tmp_path / "run")
    curves = training_curves(recs)
    assert [(s.name, s.offset, s.steps) for s in curves.stages] == [("source", 0, 12), ("st1", 12, 8)]
    # loss terms only: no counters, learning rates, grad norm or timing
    assert list(curves.terms)[0] == "loss"
    assert set(curves.terms) == {"loss", "ce_src", "ce_cs", "sc", "tc", "ce_tgt", "mse"}
    xs, ys = curves.terms["loss"]
    assert xs == list(range(1, 21))  # repeated steps of the resumed run counted once, stages end to end
    # the resumed run's record of step 6 wins over the first one
    first6 = [r for r in recs if r.get("stage") == "source" and r.get("step") == 6 and "event" not in r]
    assert len(first6) == 2 and ys[5] == pytest.approx(first6[-1]["loss"])
    assert curves.terms["ce_tgt"][0] == list(range(13, 21))  # only in the self-training stage
    assert curves.evals["dev_f1"][0] == [4, 8, 12, 16, 20]
    assert curves.calibration == {"source": 2.0, "st1": 2.0}
    assert curves.final == {"source_dev": 0.5, "target_test": 0.25}
    only = training_curves(recs, terms=["tc", "nope"])
    assert list(only.terms) == ["tc"]


def test_read_log_errors(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_log(tmp_path)
    (tmp_path / "log.jsonl").write_text('{"stage": "source", "step": 1}\n{oops\n')
    with pytest.raises(UserError, match=r"log.jsonl:2: not a JSON record"):
        read_log(tmp_path)


def test_per_type_table_and_markdown(tmp_path):
    ra = write_run(tmp_path / "a" / "run", seed=1)
    rb = write_run(tmp_path / "b" / "run", seed=2, types=("LOC", "PER"))
    names = run_names([tmp_path / "a" / "run", tmp_path / "b" / "run"])
    assert names == ["a/run", "b/run"]
    table = per_type_table(dict(zip(names, [ra, rb])))
    assert table.types == ["LOC", "ORG", "PER", "micro"] and table.runs == names
    assert table.values["f1"].shape == (2, 4)
    assert table.values["recall"][1, 2] == pytest.approx(rb["final"]["target_test"]["per_type"]["PER"]["recall"])
    assert np.isnan(table.values["f1"][1, 1])  # run b does not score ORG
    assert table.values["precision"][0, 3] == pytest.approx(ra["final"]["target_test"]["precision"])
    md = compare_markdown(table)
    lines = md.strip().splitlines()
    assert lines[0] == "| type | a/run P | a/run R | a/run F1 | b/run P | b/run R | b/run F1 | support |"
    assert len(lines) == 2 + 4
    loc = lines[2].split(" | ")
    assert loc[0] == "| LOC" and loc[3] == f"{100 * ra['final']['target_test']['per_type']['LOC']['f1']:.1f}"
    assert lines[3].split(" | ")[4] == "-"  # ORG of run b
    dev = per_type_table({"a": ra}, split="source_dev")
    assert dev.values["f1"][0, 0] == pytest.approx(ra["final"]["source_dev"]["per_type"]["LOC"]["f1"])
    with pytest.raises(UserError, match="run a: no 'target_dev' scores"):
        per_type_table({"a": ra}, split="target_dev")


def test_entity_confusion_exact_and_overlap():
    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["O", "B-LOC", "I-LOC", "O"]]
    pred = [[(0, 1, "PER"), (3, 3, "ORG"), (4, 4, "LOC")],  # PER right, LOC typed ORG, a spurious LOC, ORG missed
            [(1, 1, "LOC")]]  # boundary error
    c = entity_confusion(gold, pred)
    assert c.labels == ["LOC", "ORG", "PER", "O"]
    ix = {t: i for i, t in enumerate(c.labels)}
    expect = np.zeros((4, 4), dtype=int)
    expect[ix["PER"], ix["PER"]] = 1
    expect[ix["LOC"], ix["ORG"]] = 1
    expect[ix["O"], ix["LOC"]] = 2  # the spurious LOC and the too-short LOC
    expect[ix["ORG"], ix["O"]] = 1
    expect[ix["LOC"], ix["O"]] = 1  # the long LOC, missed under exact matching
    assert (c.counts == expect).all()
    assert c.counts.sum(axis=1)[:3].tolist() == [2, 1, 1]  # every gold entity counted once
    o = entity_confusion(gold, pred, match="overlap")
    assert o.counts[ix["LOC"], ix["LOC"]] == 1 and o.counts[ix["O"], ix["LOC"]] == 1
    assert o.counts[ix["O"], ix["O"]] == 0
    norm = o.row_normalized()
    assert np.allclose(norm[:3].sum(axis=1), 1.0)
    fixed = entity_confusion(gold, pred, types=["PER", "ORG", "LOC", "MISC"])
    assert fixed.labels == ["PER", "ORG", "LOC", "MISC", "O"] and fixed.counts[3].sum() == 0


def test_entity_confusion_random_totals():
    rng = random.Random(7)
    types = ["A", "B", "C"]
    gold, pred = [], []
    for _ in range(50):
        n = rng.randint(1, 12)
        tags, i = [], 0
        while i < n:
            if rng.random() < 0.3:
                t, ln = rng.choice(types), rng.randint(1, 3)
                ln = min(ln, n - i)
                tags += [f"B-{t}"] + [f"I-{t}"] * (ln - 1)
                i += ln
            else:
                tags.append("O")
                i += 1
        gold.append(tags)
        ents, i = [], 0
        while i < n:
            if rng.random() < 0.3:
                j = min(n - 1, i + rng.randint(0, 2))
                ents.append((i, j, rng.choice(types)))
                i = j + 1
            else:
                i += 1
        pred.append(ents)
    from mclner.data.iob2 import iob2_to_entities

    n_gold = sum(len(iob2_to_entities(t)) for t in gold)
    n_pred = sum(len(p) for p in pred)
    for match in ("exact", "overlap"):
        c = entity_confusion(gold, pred, match=match)
        assert c.counts[:-1].sum() == n_gold  # rows: each gold entity once
        assert c.counts[:, :-1].sum() == n_pred  # columns: each prediction once
        assert c.counts[-1, -1] == 0


def test_entity_confusion_bad_input():
    with pytest.raises(ValueError, match="2 gold sentences but 1 predictions"):
        entity_confusion([["O"], ["O"]], [[]])
    with pytest.raises(ValueError, match=r"sentence 0: predicted entity \(1, 3, 'PER'\) is outside its 2 word"):
        entity_confusion([["O", "O"]], [[(1, 3, "PER")]])
    with pytest.raises(ValueError, match="sentence 1: not an IOB2 tag"):
        entity_confusion([["O"], ["X-PER"]], [[], []])
    with pytest.raises(ValueError, match="match must be"):
        entity_confusion([], [], match="fuzzy")


# ----------------------------------------------------------------------------- figures

needs_mpl = pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None,
                               reason="plots need matplotlib (pip install 'mclner[viz]')")


def _check_files(res, stem):
    from matplotlib.image import imread

    assert [p.name for p in res.files] == [stem.name + ".png", stem.name + ".svg", stem.name + ".json"]
    img = imread(res.files[0])
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert img[..., :3].std() > 0.01  # not a blank image
    svg = ET.parse(res.files[1]).getroot()
    texts = ["".join(t.itertext()) for t in svg.iter("{http://www.w3.org/2000/svg}text")]
    on_disk = json.loads(res.files[2].read_text(encoding="utf-8"))
    assert on_disk["kind"] == res.data["kind"] and on_disk["axes"] == res.data["axes"]
    return texts, on_disk


@needs_mpl
def test_plot_training_curves(tmp_path):
    from mclner.viz.plots import plot_training_curves

    write_run(tmp_path / "run", resume_at=6)
    curves = training_curves(read_log(tmp_path / "run"))
    res = plot_training_curves(curves, tmp_path / "fig" / "curves.png", title="demo")
    texts, data = _check_files(res, tmp_path / "fig" / "curves")
    loss_ax, dev_ax = data["axes"]
    assert loss_ax["ylabel"] == "loss" and dev_ax["ylabel"] == "dev score (%)"
    assert dev_ax["xlabel"].startswith("optimizer step")
    assert loss_ax["legend"] == [list(curves.terms)]  # one legend entry per loss term
    assert {ln["label"]: ln["points"] for ln in loss_ax["lines"]}["loss"] == 20
    assert {ln["label"]: ln["points"] for ln in loss_ax["lines"]}["ce_tgt"] == 8
    assert [ln["label"] for ln in dev_ax["lines"]] == ["dev F1", "dev precision", "dev recall"]
    assert all(ln["points"] == 5 for ln in dev_ax["lines"])
    assert data["stages"] == [{"name": "source", "offset": 0, "steps": 12}, {"name": "st1", "offset": 12, "steps": 8}]
    assert "source (NONE bias 2)" in texts and "st1 (NONE bias 2)" in texts and "demo" in texts
    assert data["evals"]["dev_f1"]["step"] == [4, 8, 12, 16, 20]


@needs_mpl
def test_plots_are_deterministic(tmp_path):
    from mclner.viz.plots import plot_training_curves

    write_run(tmp_path / "run")
    curves = training_curves(read_log(tmp_path / "run"))
    a = plot_training_curves(curves, tmp_path / "a", seed=3)
    b = plot_training_curves(curves, tmp_path / "b", seed=3)
    for fa, fb in zip(a.files, b.files):
        assert fa.read_bytes() == fb.read_bytes(), fa.name


@needs_mpl
def test_plot_per_type_and_compare_cli(tmp_path, capsys):
    write_run(tmp_path / "r1", seed=1)
    write_run(tmp_path / "r2", seed=2)
    write_run(tmp_path / "r3", seed=3, types=("LOC", "MISC"))
    capsys.readouterr()
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "r1"), str(tmp_path / "r2"), str(tmp_path / "r3"), "--plot", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "| run | method | scored on | sentences | entities |"  # what each run was scored on
    printed = printed[printed.index("") + 1 :]
    assert printed[0].startswith("| type | r1 P | r1 R | r1 F1 | r2 P |") and printed[0].endswith("| support |")
    assert [ln.split(" | ")[0] for ln in printed[2:7]] == ["| LOC", "| MISC", "| ORG", "| PER", "| micro"]
    assert printed[7:] == [str(out) + ".png", str(out) + ".svg", str(out) + ".json"]
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert data["runs"] == ["r1", "r2", "r3"] and data["types"] == ["LOC", "MISC", "ORG", "PER", "micro"]
    axes = data["axes"]
    assert [a["ylabel"] for a in axes] == ["precision (%)", "recall (%)", "F1 (%)"]
    assert all(a["bars"] == [5, 5, 5] for a in axes)  # a bar per type and run, in every panel
    assert axes[0]["legend"] == [["r1", "r2", "r3"]]
    assert axes[2]["xticklabels"] == data["types"] and axes[2]["xlabel"] == "entity type (target_test)"
    assert data["values"]["f1"][2][2] is None  # r3 has no ORG

    assert main(["compare", str(tmp_path / "r1"), "--json", "--split", "source_dev"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["split"] == "source_dev" and len(js["values"]["f1"][0]) == 4

    assert main(["plot", "per-type", str(tmp_path / "r1")]) == 0
    assert (tmp_path / "r1" / "plots" / "per_type.svg").exists()
    assert main(["plot", "curves", str(tmp_path / "r1")]) == 0
    files = capsys.readouterr().out.split()
    assert files[-3:] == [str(tmp_path / "r1" / "plots" / f"curves.{e}") for e in ("png", "svg", "json")]


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing: no such run folder" in err
    (tmp_path / "unfinished").mkdir()
    assert main(["compare", str(tmp_path / "unfinished")]) == 2
    assert "results.json: no such file (the run has not finished" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "log.jsonl").write_text("not json\n")
    assert main(["plot", "curves", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "log.jsonl:1: not a JSON record" in err


@needs_mpl
def test_plot_matrices_heatmap(tmp_path):
    from mclner.viz.plots import MatrixPanel, plot_matrices, plot_matrix

    rng = np.random.default_rng(0)
    src = ["John", "lives", "in", "New", "York", "."]
    tgt = ["约", "翰", "住", "在", "纽", "约", "。"]
    a, b = rng.uniform(-1, 1, (6, 7)), rng.uniform(-1, 1, (6, 7))
    res = plot_matrices([MatrixPanel(a, src, tgt, "view A", "target", "source"),
                         MatrixPanel(b, src, tgt, "view B", "target", "source")], tmp_path / "heat",
                        cmap="RdBu_r", vmin=-1, vmax=1, colorbar_label="cosine similarity", title="relations")
    texts, data = _check_files(res, tmp_path / "heat")
    assert len(data["axes"]) == 2
    for ax, title in zip(data["axes"], ["view A", "view B"]):
        assert ax["images"] == [[6, 7]] and ax["title"] == title
        assert ax["yticklabels"] == src and ax["xticklabels"] == tgt  # the words on both axes
        assert ax["xlabel"] == "target" and ax["ylabel"] == "source"
    assert np.allclose(np.array(data["panels"][1]["matrix"]), b)
    assert data["vmin"] == -1 and data["vmax"] == 1
    assert "纽" in texts and "cosine similarity" in texts and f"{a[0, 0]:.2f}" in texts
    with pytest.raises(ValueError, match="panel 0: matrix shape"):
        plot_matrix(a, src[:3], tgt, tmp_path / "bad")
    big = plot_matrix(rng.normal(size=(20, 30)), [f"r{i}" for i in range(20)], [f"c{i}" for i in range(30)],
                      tmp_path / "big")
    assert big.data["axes"][0]["images"] == [[20, 30]] and len(big.data["axes"][0]["xticklabels"]) == 30


@needs_mpl
def test_plot_confusion(tmp_path):
    from mclner.viz.plots import plot_confusion

    gold = [["B-PER", "I-PER", "O", "B-LOC", "O", "B-ORG"], ["O", "B-LOC", "I-LOC", "O"]]
    pred = [[(0, 1, "PER"), (3, 3, "ORG"), (4, 4, "LOC")], [(1, 1, "LOC")]]
    conf = entity_confusion(gold, pred)
    res = plot_confusion(conf, tmp_path / "conf", normalize=True)
    texts, data = _check_files(res, tmp_path / "conf")
    (ax,) = data["axes"]
    assert ax["images"] == [[4, 4]]
    assert ax["yticklabels"] == ["LOC", "ORG", "PER", "O (spurious)"]
    assert ax["xticklabels"] == ["LOC", "ORG", "PER", "O (missed)"]
    assert ax["xlabel"] == "predicted type" and ax["ylabel"] == "gold type"
    assert data["counts"] == conf.counts.tolist() and data["normalized"] is True
    shown = np.array(data["panels"][0]["matrix"], dtype=float)
    assert np.isnan(shown[-1, -1])  # O/O is not a count: blank
    expect = conf.row_normalized()
    assert np.allclose(shown[:-1], expect[:-1]) and np.allclose(shown[-1, :-1], expect[-1, :-1])


@needs_mpl
def test_plot_confusion_cli(tmp_path, capsys):
    gold = tmp_path / "gold.conll"
    gold.write_text("John B-PER\nSmith I-PER\nin O\nParis B-LOC\n\nUN B-ORG\nmet O\n\n")
    preds = tmp_path / "pred.jsonl"
    preds.write_text(json.dumps({"tokens": ["John", "Smith", "in", "Paris"],
                                 "entities": [{"start": 0, "end": 1, "type": "PER", "text": "John Smith"},
                                              {"start": 3, "end": 3, "type": "ORG", "text": "Paris"}]}) + "\n"
                     + json.dumps({"tokens": ["UN", "met"], "entities": [
                         {"entity_group": "ORG", "word_start": 0, "word_end": 0, "start": 0, "end": 2,
                          "word": "UN", "score": 0.9}]}) + "\n")
    capsys.readouterr()
    assert main(["plot", "confusion", str(gold), str(preds), "--json"]) == 0
    out = capsys.readouterr().out.splitlines()
    js = json.loads(out[0])
    assert js["labels"] == ["LOC", "ORG", "PER", "O"]
    assert js["counts"] == [[0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    assert out[1:] == [str(tmp_path / f"pred.confusion.{e}") for e in ("png", "svg", "json")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"tokens": ["John"], "entities": []}) + "\n" + "{}\n")
    assert main(["plot", "confusion", str(gold), str(bad)]) == 2
    assert "bad.jsonl:2: not a `mclner predict` JSON line" in capsys.readouterr().err


@needs_mpl
def test_embed_2d_pca_fallback_is_deterministic():
    from mclner.viz.plots import embed_2d

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 16))
    x[:, 0] *= 10  # a dominant direction
    c1, m1 = embed_2d(x, method="pca")
    c2, _ = embed_2d(x.copy(), method="pca")
    assert m1 == "pca" and c1.shape == (40, 2) and np.array_equal(c1, c2)
    # the first coordinate is the projection on the leading principal axis: it carries the most variance
    assert c1[:, 0].var() > c1[:, 1].var()
    assert abs(np.corrcoef(c1[:, 0], x[:, 0])[0, 1]) > 0.95
    assert embed_2d(x[:1], method="pca")[0].tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match="finite"):
        embed_2d(np.array([[np.nan, 1.0]]))


@needs_mpl
def test_plot_embedding(tmp_path):
    from mclner.viz.plots import plot_embedding

    rng = np.random.default_rng(2)
    langs = ["en"] * 12 + ["zh"] * 9 + ["en-zh"] * 6
    types = (["PER", "LOC", "ORG"] * 9)[:27]
    pts = rng.normal(size=(27, 8))
    res = plot_embedding(pts, langs, types, tmp_path / "emb", method="pca", title="entities", seed=5)
    texts, data = _check_files(res, tmp_path / "emb")
    (ax,) = data["axes"]
    assert sum(ax["scatter_points"]) == 27
    assert len(ax["scatter_points"]) == 3 * 3  # one collection per (language, type)
    assert sorted(ax["legend"]) == sorted([["en", "en-zh", "zh"], ["LOC", "ORG", "PER"]])
    assert ax["xlabel"] == "PCA 1" and ax["title"] == "entities"
    assert data["counts"]["zh/PER"] == sum(1 for lang, t in zip(langs, types) if lang == "zh" and t == "PER")
    assert len(data["coords"]) == 27
    given = plot_embedding(rng.normal(size=(5, 2)), ["a"] * 5, ["X"] * 5, tmp_path / "two", method="none")
    assert given.data["method"] == "none" and given.data["axes"][0]["scatter_points"] == [5]
    with pytest.raises(ValueError, match="do not match"):
        plot_embedding(pts, langs[:3], types, tmp_path / "bad")


@needs_mpl
def test_embed_2d_tsne_when_available():
    pytest.importorskip("sklearn", reason="t-SNE needs scikit-learn (optional)")
    from mclner.viz.plots import embed_2d

    x = np.random.default_rng(3).normal(size=(30, 5))
    c1, m = embed_2d(x, seed=4)
    c2, _ = embed_2d(x, seed=4)
    assert m == "tsne" and c1.shape == (30, 2) and np.allclose(c1, c2)


@needs_mpl
def test_embed_2d_without_sklearn_falls_back_to_pca(monkeypatch):
    import sys

    from mclner.viz.plots import embed_2d

    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    x = np.random.default_rng(5).normal(size=(12, 4))
    coords, method = embed_2d(x)
    assert method == "pca" and np.array_equal(coords, embed_2d(x, method="pca")[0])
    with pytest.raises(UserError, match="t-SNE needs scikit-learn"):
        embed_2d(x, method="tsne")


def test_plot_without_matplotlib_is_one_line(tmp_path, capsys, monkeypatch):
    import sys

    write_run(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["compare", str(tmp_path / "run")]) == 0  # the table needs no matplotlib
    assert main(["plot", "curves", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == 'mclner plot: error: plots need matplotlib: pip install "mclner[viz]" (or "matplotlib>=3.7")'
    assert not (tmp_path / "run" / "plots").exists() or not any((tmp_path / "run" / "plots").iterdir())


@needs_mpl
def test_plots_from_a_tiny_encoder_run(tmp_path, capsys):
    """A real run written by `mclner train` (tiny encoder, 4 steps): the curves and the comparison read
    what the trainer wrote, and the figures hold exactly those numbers."""
    from mclner_fixtures import make_tiny_encoder_dir, synthetic_en, synthetic_zh, write_conll

    enc = make_tiny_encoder_dir(tmp_path / "enc")
    for split, n, seed in (("train", 16, 0), ("dev", 6, 1), ("test", 6, 2)):
        write_conll(tmp_path / "en" / f"{split}.txt", synthetic_en(n, seed))
    write_conll(tmp_path / "zh" / "test.txt", synthetic_zh(6, 3))
    run = tmp_path / "runs" / "mcl"
    assert main(["train", "--source", str(tmp_path / "en"), "--target", str(tmp_path / "zh"), "--encoder", enc,
                 "--no-codeswitch", "--output-dir", str(run), "--max-steps", "4", "--batch-size", "8",
                 "--eval-every", "2", "--biaffine-dim", "16", "--cln-hidden", "16", "--proj-dim", "8",
                 "--no-progress", "--seed", "1", "--self-training-rounds", "0"]) == 0

    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r and "event" not in r]
    assert main(["plot", "curves", str(run)]) == 0
    data = json.loads((run / "plots" / "curves.json").read_text())
    assert data["terms"]["loss"]["step"] == [r["step"] for r in steps]
    assert data["terms"]["loss"]["value"] == pytest.approx([r["loss"] for r in steps])
    assert "ce_src" in data["terms"] and "lr_encoder" not in data["terms"] and "grad_norm" not in data["terms"]
    assert data["evals"]["dev_f1"]["step"] == [2, 4]
    assert data["stages"] == [{"name": "source", "offset": 0, "steps": 4}]
    assert data["axes"][0]["legend"] == [list(data["terms"])]

    other = tmp_path / "runs" / "synthetic"
    write_run(other, types=("LOC", "ORG", "PER"))
    capsys.readouterr()
    assert main(["compare", str(run), str(other), "--plot", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out.splitlines()
    table = table[table.index("") + 1 :]  # after the table of what each run was scored on
    assert table[0].startswith("| type | mcl P | mcl R | mcl F1 | synthetic P |")
    res = json.loads((run / "results.json").read_text())["final"]["target_test"]
    micro = next(ln for ln in table if ln.startswith("| micro"))
    assert micro.split(" | ")[3] == f"{100 * res['f1']:.1f}"  # the trained run's micro F1
    data = json.loads((tmp_path / "cmp.json").read_text())
    assert data["types"] == sorted(set(res["per_type"]) | {"LOC", "ORG", "PER"}) + ["micro"]
    assert data["axes"][2]["bars"] == [len(data["types"])] * 2


def test_scores_table_from_evaluate_dicts():
    from mclner.viz.runs import scores_table

    a = {"precision": 0.5, "recall": 0.25, "f1": 1 / 3, "support": 4,
         "per_type": {"PER": {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
                      "LOC": {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}}}
    t = scores_table({"ckpt": a}, "msra test")
    assert t.types == ["LOC", "PER", "micro"] and t.split == "msra test"
    assert t.values["f1"][0].tolist() == pytest.approx([0.0, 0.5, 1 / 3]) and t.support[0].tolist() == [2, 2, 4]
    with pytest.raises(UserError, match="no runs"):
        scores_table({})
