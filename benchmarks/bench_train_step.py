"""One mCL-NER training step (forward with L_ce(src) + L_ce(cs) + L_sc + L_tc, backward, AdamW) with
and without --fused, at N = 128 and 256 words per sentence.

    PYTHONPATH=. python -m pytest benchmarks/bench_train_step.py --benchmark-only

extra_info: impl actually selected per op, peak extra memory of one step (benchmarks/mclner_memory.py: CUDA
allocator peak on a GPU, the step's own peak RSS on the CPU), B, N, D, M (L_tc pairs); the step
also appears in the fused/reference ratio table. The encoder is a randomly initialised 2-layer
BERT of the default encoder's width (384) so that the step is dominated by what --fused changes:
the relation heads and InfoNCE.
Sizes: MCLNER_BENCH_B (default 2 on CPU, 8 on GPU).
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import record
from mclner_memory import peak_extra_bytes

from mclner import ops
from mclner.methods.mclner import MCLNERConfig, MCLNERMethod

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
B = int(os.environ.get("MCLNER_BENCH_B", "8" if DEVICE.type == "cuda" else "2"))
D = 384
C = 6  # NONE, NNW, 4 CoNLL types


def make_batch(n: int, b: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    L = n + 2
    word_index = torch.full((b, L), -1, dtype=torch.long)
    word_index[:, 1 : n + 1] = torch.arange(n)
    grid = torch.zeros(b, n, n, dtype=torch.long)
    # a few entities per sentence: THW on the diagonal band, NNW above it
    for s in range(0, n - 2, 9):
        grid[:, s, s + 1] = 1
        grid[:, s + 1, s] = 2 + (s % 4)
    return {
        "input_ids": torch.randint(5, 1000, (b, L), generator=g),
        "attention_mask": torch.ones(b, L, dtype=torch.long),
        "word_index": word_index,
        "word_mask": torch.ones(b, n, dtype=torch.bool),
        "grid_labels": grid,
        "lengths": torch.full((b,), n),
    }


def make_model():
    from transformers import BertConfig, BertModel

    from mclner.data.labels import LabelMap

    torch.manual_seed(0)
    enc = BertModel(BertConfig(vocab_size=1000, hidden_size=D, num_hidden_layers=2, num_attention_heads=6,
                               intermediate_size=4 * D, max_position_embeddings=512), add_pooling_layer=False)
    model = METHOD.build_model(enc, LabelMap(["LOC", "MISC", "ORG", "PER"]))  # C = 6 classes
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model.to(DEVICE)


METHOD = MCLNERMethod(MCLNERConfig(tc_max_pairs=4096))


@pytest.mark.parametrize("n", [128, 256])
@pytest.mark.parametrize("fused", [False, True], ids=["reference", "fused"])
def test_train_step(benchmark, n, fused):
    impl = "auto" if fused else "reference"
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    src = {k: v.to(DEVICE) for k, v in make_batch(n, B, 0).items()}
    cs = {k: v.to(DEVICE) for k, v in make_batch(n, B, 1).items()}
    align = torch.arange(n, device=DEVICE).expand(B, n).contiguous()
    stage = METHOD.stages()[0]  # the source stage: L_ce(src) + L_ce(cs) + w·(L_sc + L_tc)
    batch = {"src": src, "cs": cs, "alignment": align}
    pairs = []

    def step():
        opt.zero_grad(set_to_none=True)
        out = METHOD.loss(model, batch, stage, impl)
        out["loss"].backward()
        opt.step()
        pairs.append(float(out.get("stats", {}).get("tc_pairs", torch.tensor(0.0))))
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up: optimizer state, kernel compilation, thread pools
    peak = peak_extra_bytes(step, DEVICE)
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=0)
    record(f"train step B{B} N{n}", "fused" if fused else "reference", benchmark.stats.stats.median, peak)
    benchmark.extra_info.update({
        "device": str(DEVICE), "B": B, "N": n, "D": D, "M": pairs[-1], "fused": fused,
        "peak_extra_bytes": int(peak),
        "impl": {op: (ops.selected_impl(op, DEVICE, torch.float32) if fused else "reference")
                 for op in ("biaffine", "cln_head", "info_nce")},
    })
