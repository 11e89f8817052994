"""--length-buckets K: each window of K batches of the epoch permutation is sorted by length before it
is cut, the batch order is shuffled; off by default; a bucketed run resumes bit-exactly."""

from __future__ import annotations

import random

import pytest
import torch

from mclner.training.batching import length_bucketed


def _batches(n: int, bs: int, k: int, seed: int = 0):
    lengths = [random.Random(seed + i).randint(1, 40) for i in range(n)]
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=gen).tolist()
    return perm, lengths, length_bucketed(perm, lengths, bs, k, gen)


@pytest.mark.parametrize("n,bs,k", [(100, 8, 3), (37, 4, 1), (64, 16, 50), (5, 8, 2)])
def test_every_sentence_once_in_batches_of_bs_sorted_within_windows(n, bs, k):
    perm, lengths, batches = _batches(n, bs, k)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(n))
    assert [len(b) for b in batches].count(bs) >= len(batches) - 1
    w = bs * k
    for start in range(0, n, w):
        window = perm[start : start + w]
        mine = [b for b in batches if b[0] in window]
        assert all(set(b) <= set(window) for b in mine)  # a batch never mixes two windows
        # the window's batches, in the order of their first sentence's length, are one sorted run
        run = [lengths[i] for b in sorted(mine, key=lambda b: (lengths[b[0]], lengths[b[-1]])) for i in b]
        assert run == sorted(lengths[i] for i in window)


def test_padding_drops_and_the_result_is_seeded():
    _, lengths, bucketed = _batches(400, 16, 25)
    plain = [list(range(k, min(k + 16, 400))) for k in range(0, 400, 16)]

    def padded(batches):
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(bucketed) < 0.8 * padded(plain)
    assert _batches(400, 16, 25)[2] == bucketed
    assert _batches(400, 16, 25, seed=1)[2] != bucketed


def test_the_option_is_off_by_default_and_validated():
    from mclner.cli import build_parser
    from mclner.errors import UserError
    from mclner.training.cli import config_from_args
    from mclner.training.config import TrainConfig

    assert TrainConfig().length_buckets == 0
    cfg = config_from_args(build_parser().parse_args(["train", "--length-buckets", "50"]))
    assert cfg.length_buckets == 50
    with pytest.raises(UserError, match="--length-buckets"):
        TrainConfig(length_buckets=-1).validate()


def test_a_bucketed_run_resumes_exactly(task_files):
    from mclner.cli import build_parser
    from mclner.inference.checkpoint import read_weights
    from mclner.training.cli import config_from_args
    from mclner.training.trainer import train

    root, paths = task_files

    def cfg(out):
        return config_from_args(build_parser().parse_args([
            "train", "--method", "token-classification", "--source", paths["en"], "--target", paths["zh"],
            "--target-lang", "zh", "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "4",
            "--batch-size", "2", "--effective-batch-size", "4", "--eval-every", "4", "--save-every", "2",
            "--length-buckets", "2", "--no-progress", "--seed", "7"]))

    full, cut = root / "buckets-full", root / "buckets-cut"
    train(cfg(full))
    c = cfg(cut)
    c.stop_after_steps = 3
    assert train(c).get("interrupted")
    c.stop_after_steps = None
    train(c, resume=True)
    a, b = read_weights(full / "best"), read_weights(cut / "best")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
