"""The span-extraction / type-prediction split of the entity score (`mclner.evaluation.span_type_scores`,
the ``span`` and ``type`` keys of `score`) on hand-counted cases, against seqeval on random cases, and
its columns in scripts/results_table.py."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest

from mclner.data.iob2 import entities_to_iob2, iob2_to_entities
from mclner.evaluation import format_scores, score, span_type_scores

GOLD = [
    ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "B-ORG"],  # PER 0-1, LOC 3-4, ORG 6
    ["O", "O", "B-PER"],  # PER 2
    ["O", "O", "O"],  # no entity
]
PRED = [
    [(0, 1, "LOC"), (3, 3, "LOC"), (6, 6, "ORG")],  # right span wrong type, right type wrong end, exact
    [],  # nothing predicted: the PER is missed
    [(1, 2, "PER")],  # a sentence without gold entities: a false positive
]


def test_hand_counted_split():
    # 4 gold, 4 predicted; spans found exactly: 0-1 and 6 (3-3 is not 3-4); of these, 6 has the right type
    res = span_type_scores(GOLD, PRED)
    assert res["span"] == pytest.approx({"precision": 2 / 4, "recall": 2 / 4, "f1": 0.5})
    assert res["type"] == {"accuracy": 0.5, "matched": 2, "correct": 1}
    full = score(GOLD, PRED)
    # the typed score: only ORG 6 is right, P = R = 1/4; F1 = span F1 × type accuracy
    assert (full["precision"], full["recall"], full["f1"]) == pytest.approx((0.25, 0.25, 0.25))
    assert full["f1"] == pytest.approx(res["span"]["f1"] * res["type"]["accuracy"])
    assert full["span"] == res["span"] and full["type"] == res["type"]


def test_type_accuracy_is_one_when_every_found_span_is_typed_right():
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    res = span_type_scores(gold, [[(0, 1, "PER"), (2, 3, "LOC")]])  # 2-3 overshoots LOC 3
    assert res["span"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5})
    assert res["type"] == {"accuracy": 1.0, "matched": 1, "correct": 1}


def test_empty_predictions():
    res = span_type_scores(GOLD, [[] for _ in GOLD])
    assert res["span"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert res["type"] == {"accuracy": 0.0, "matched": 0, "correct": 0}


def test_empty_gold():
    gold = [["O", "O", "O"], ["O"]]
    res = span_type_scores(gold, [[(0, 1, "PER")], []])
    # no gold type at all: every predicted type is absent from the gold label set and dropped
    assert res["span"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert res["type"]["matched"] == 0
    both_empty = span_type_scores(gold, [[], []])
    assert both_empty["span"]["f1"] == 0.0 and both_empty["type"]["matched"] == 0


def test_types_absent_from_gold_are_dropped_before_the_split():
    # MISC is not a gold type: its prediction on the PER span is dropped, as the typed score drops it,
    # so it neither finds the span nor counts as a predicted one
    gold = [["B-PER", "I-PER", "O", "B-LOC"]]
    res = score(gold, [[(0, 1, "MISC"), (3, 3, "PER")]])
    assert res["dropped_types"] == ["MISC"]
    assert res["span"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3})
    assert res["type"] == {"accuracy": 0.0, "matched": 1, "correct": 0}
    # an entity past the sentence end is ignored by both
    assert span_type_scores(gold, [[(3, 5, "LOC")]])["span"]["precision"] == 0.0


def _random_entities(rng: random.Random, n: int, types) -> list:
    ents, i = [], 0
    while i < n:
        if rng.random() < 0.35:
            e = min(n - 1, i + rng.randrange(3))
            ents.append((i, e, rng.choice(types)))
            i = e + 2
        else:
            i += 1
    return ents


@pytest.mark.parametrize("seed", range(5))
def test_split_agrees_with_seqeval(seed):
    """Span P/R/F1 = seqeval strict scores with every type renamed to one; the typed P/R/F1 of `score`
    = span P/R/F1 × type accuracy."""
    from seqeval.metrics import f1_score, precision_score, recall_score
    from seqeval.scheme import IOB2

    rng = random.Random(seed)
    types = ["PER", "LOC", "ORG"]
    gold, pred = [], []
    for _ in range(40):
        n = rng.randrange(1, 12)
        g = _random_entities(rng, n, types)
        gold.append(entities_to_iob2(g, n))
        # predictions: some gold entities kept, retyped or moved, plus new ones
        p = []
        for s, e, t in g:
            u = rng.random()
            if u < 0.4:
                p.append((s, e, t))
            elif u < 0.6:
                p.append((s, e, rng.choice(types)))
            elif u < 0.75 and e + 1 < n:
                p.append((s, e + 1, t))
        if not p:
            p = _random_entities(rng, n, types)
        pred.append(iob2_to_entities(entities_to_iob2(p, n)) if _flat(p) else [])

    res = score(gold, pred)

    def one_type(seqs):
        return [[t if t == "O" else t[:2] + "E" for t in s] for s in seqs]

    y_true = one_type(gold)
    y_pred = one_type([entities_to_iob2(p, len(g)) for p, g in zip(pred, gold)])
    kw = dict(mode="strict", scheme=IOB2, zero_division=0)
    assert res["span"]["precision"] == pytest.approx(precision_score(y_true, y_pred, **kw))
    assert res["span"]["recall"] == pytest.approx(recall_score(y_true, y_pred, **kw))
    assert res["span"]["f1"] == pytest.approx(f1_score(y_true, y_pred, **kw))
    assert 0 < res["type"]["matched"] and 0 < res["type"]["accuracy"] < 1
    acc = res["type"]["accuracy"]
    assert res["precision"] == pytest.approx(res["span"]["precision"] * acc)
    assert res["recall"] == pytest.approx(res["span"]["recall"] * acc)
    assert res["f1"] == pytest.approx(res["span"]["f1"] * acc)


def _flat(ents) -> bool:
    words = [k for s, e, _ in ents for k in range(s, e + 1)]
    return len(words) == len(set(words))


def test_format_scores_prints_the_split_once():
    text = format_scores(score(GOLD, PRED))
    lines = [x for x in text.splitlines() if x.startswith("span")]
    assert len(lines) == 1
    assert "50.00" in lines[0] and "type accuracy 50.00 on the 2 exact spans" in lines[0]
    # a score dict from before the split (no span/type keys) still prints
    old = {k: v for k, v in score(GOLD, PRED).items() if k not in ("span", "type")}
    assert not any(x.startswith("span") for x in format_scores(old).splitlines())


# ----------------------------------------------------------------------------- scripts/results_table.py


def _results_table():
    path = Path(__file__).resolve().parents[2] / "scripts" / "results_table.py"
    spec = importlib.util.spec_from_file_location("results_table", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _fake_run(d: Path, own: dict, argmax_f1: float, dev_f1: float, minutes: float) -> None:
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"final": {"source_dev": {"f1": dev_f1}},
                                                "stages": {"source": {"steps": 100}, "target": {"steps": 20}}}))
    (d / "log.jsonl").write_text(json.dumps({"stage": "source", "elapsed_s": 60 * minutes}) + "\n")
    (d / "msra_full.json").write_text(json.dumps(own))
    (d / "msra_full_argmax.json").write_text(json.dumps({"f1": argmax_f1}))


def test_results_table_span_and_type_columns(tmp_path):
    for seed, (sf, acc) in ((1, (0.5, 0.8)), (2, (0.7, 0.6))):
        own = {"f1": sf * acc, "span": {"precision": sf, "recall": sf, "f1": sf},
               "type": {"accuracy": acc, "matched": 10, "correct": int(10 * acc)}}
        _fake_run(tmp_path / f"dlbri-s{seed}", own, 0.3, 0.9, 10)
    _fake_run(tmp_path / "old-s1", {"f1": 0.35}, 0.3, 0.8, 5)  # written before the split existed
    lines = _results_table().table(tmp_path).splitlines()
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[4:6] == ["span F1", "type acc"]
    assert lines[1].count("---") == len(header)
    rows = {r[0]: r for r in ([c.strip() for c in x.strip("|").split("|")] for x in lines[2:])}
    assert rows["dlbri"][1] == "1,2"
    assert rows["dlbri"][3] == "41.0 ± 1.4"  # own decoding F1: 0.40 and 0.42
    assert rows["dlbri"][4] == "60.0 ± 14.1" and rows["dlbri"][5] == "70.0 ± 14.1"
    assert rows["old"][3] == "35.0" and rows["old"][4] == "—" and rows["old"][5] == "—"
    assert rows["old"][6] == "80.0" and rows["old"][7] == "100+20" and rows["old"][8] == "5"


def test_results_table_leaves_out_a_file_being_written(tmp_path, capsys):
    # experiments.sh lanes run in parallel: an evaluation's JSON may be empty while another lane prints
    _fake_run(tmp_path / "tc-s1", {"f1": 0.25}, 0.2, 0.8, 5)
    (tmp_path / "tc-s1" / "msra_full.json").write_text("")
    lines = _results_table().table(tmp_path).splitlines()
    row = [c.strip() for c in lines[2].strip("|").split("|")]
    assert row[2] == "20.0" and row[3] == "—"  # argmax read, the empty own-decoding file left out
    assert "msra_full.json: not readable JSON" in capsys.readouterr().err


def test_results_table_says_when_stages_were_reused(tmp_path):
    _fake_run(tmp_path / "dlbri-no-lp-s42", {"f1": 0.2}, 0.2, 0.7, 12)
    res = json.loads((tmp_path / "dlbri-no-lp-s42" / "results.json").read_text())
    res["reused_stages"] = {"from": "runs/quick/dlbri-s42", "stages": ["source"]}
    (tmp_path / "dlbri-no-lp-s42" / "results.json").write_text(json.dumps(res))
    _fake_run(tmp_path / "tc-s42", {"f1": 0.1}, 0.1, 0.8, 5)
    rows = {r[0]: r for r in ([c.strip() for c in x.strip("|").split("|")]
                              for x in _results_table().table(tmp_path).splitlines()[2:])}
    assert rows["dlbri-no-lp"][8] == "12 (+1 reused stages)" and rows["tc"][8] == "5"
