import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mclner.data.iob2 import entities_to_iob2, iob2_to_entities
from mclner.data.labels import LabelMap
from mclner.methods.mclner.grid import (
    NNW,
    NONE,
    decode_batch,
    decode_grid,
    decode_grid_scored,
    encode_grid,
    num_classes,
    thw,
    type_of,
)

TYPES = ["LOC", "MISC", "ORG", "PER"]
LM = LabelMap(TYPES)


@st.composite
def iob2_sequences(draw):
    """Random valid IOB2: a sequence of segments, each O or an entity of 1-4 words."""
    n = draw(st.integers(0, 30))
    tags = []
    while len(tags) < n:
        if draw(st.booleans()):
            tags.append("O")
        else:
            t = draw(st.sampled_from(TYPES))
            k = draw(st.integers(1, 4))
            tags += [f"B-{t}"] + [f"I-{t}"] * (k - 1)
    return tags[:n]  # a cut entity stays valid IOB2


def one_hot(grid, c):
    return np.eye(c)[grid]


@settings(max_examples=200, deadline=None)
@given(iob2_sequences())
def test_round_trip(tags):
    ents = iob2_to_entities(tags)
    assert entities_to_iob2(ents, len(tags)) == tags
    grid = encode_grid(tags, LM)
    assert grid.dtype == np.int64 and grid.shape == (len(tags), len(tags))
    # probabilities and logits give the same entities
    assert decode_grid(one_hot(grid, num_classes(LM)), LM) == ents
    assert decode_grid(torch.tensor(one_hot(grid, num_classes(LM)) * 7.0 - 3.0), LM) == ents


def test_grid_layout():
    tags = ["B-PER", "I-PER", "I-PER", "O", "B-LOC"]
    g = encode_grid(tags, LM)
    assert g[0, 1] == NNW and g[1, 2] == NNW and g[2, 3] == NONE
    assert g[2, 0] == thw(LM, "PER")  # row = tail, column = head
    assert g[4, 4] == thw(LM, "LOC")
    assert (g != 0).sum() == 4


def test_label_map_and_grid_classes():
    assert num_classes(LM) == 6
    assert thw(LM, "LOC") == 2 and type_of(LM, 2) == "LOC" and type_of(LM, NNW) is None
    assert LabelMap.from_dict(LM.to_dict()) == LM
    assert LabelMap.from_tags([["B-PER", "O"], None, ["I-LOC"]]).types == ["LOC", "PER"]
    with pytest.raises(KeyError, match="'DATE' is not in the label map"):
        thw(LM, "DATE")
    with pytest.raises(ValueError):
        LabelMap(["PER", "PER"])


def test_discontinuous_candidate_dropped():
    g = encode_grid(["B-ORG", "I-ORG", "I-ORG"], LM)
    g[1, 2] = NONE  # broken continuity
    assert decode_grid(one_hot(g, num_classes(LM)), LM) == []


def test_overlap_resolved_by_score():
    c = num_classes(LM)
    probs = np.full((4, 4, c), 0.0)
    probs[..., NONE] = 1.0
    # candidate A: words 0..2 PER, weak; candidate B: word 2 LOC, strong
    def put(i, j, k, p):
        probs[i, j] = (1 - p) / (c - 1)
        probs[i, j, k] = p

    put(0, 1, NNW, 0.6)
    put(1, 2, NNW, 0.6)
    put(2, 0, thw(LM, "PER"), 0.6)
    put(2, 2, thw(LM, "LOC"), 0.95)
    put(3, 3, thw(LM, "ORG"), 0.9)
    assert decode_grid(probs, LM) == [(2, 2, "LOC"), (3, 3, "ORG")]
    scored = decode_grid_scored(probs, LM)
    assert scored[0][3] == pytest.approx(0.95)
    put(2, 2, thw(LM, "LOC"), 0.5)
    assert decode_grid(probs, LM) == [(0, 2, "PER"), (3, 3, "ORG")]
    # length restricts decoding
    assert decode_grid(probs, LM, length=2) == []
    assert decode_batch(probs[None], LM, [4]) == [[(0, 2, "PER"), (3, 3, "ORG")]]


def test_iob2_edge_cases():
    assert iob2_to_entities(["I-PER", "I-PER", "B-PER", "I-LOC"]) == [(0, 1, "PER"), (2, 2, "PER"), (3, 3, "LOC")]
    assert iob2_to_entities([]) == []
    with pytest.raises(ValueError):
        iob2_to_entities(["X-PER"])
    with pytest.raises(ValueError):
        entities_to_iob2([(0, 1, "PER"), (1, 2, "LOC")], 3)
    with pytest.raises(ValueError):
        decode_grid(np.zeros((3, 3, 5)), LM)
