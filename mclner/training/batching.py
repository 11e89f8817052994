"""The batches of a stage, fixed by (seed, stage, epoch) so that a resume sees the same ones: the
epoch's permutation (optionally length-bucketed), this process's share of it, the target sentences
that go with each micro-batch, and the number of optimizer steps it all makes."""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import torch

from mclner.methods.base import Stage
from mclner.training.dist import hash_stage

# One micro-batch: (source examples, target sentences or None); a stage that reads no source data
# has no examples and its target sentences instead.
MicroBatch = Tuple[List[Any], Optional[List[Any]]]


def stage_steps(stage: Stage, cfg: Any, n_examples: int, world: int = 1) -> Tuple[int, int]:
    """(optimizer steps of the stage, steps per epoch) for ``n_examples`` examples (source examples, or
    target sentences for a stage that reads no source data) on ``world`` processes."""
    bs = cfg.batch_size
    accum = max(1, cfg.effective_batch_size // (bs * world))
    nb = math.ceil(n_examples / bs)
    nb_rank = max(1, nb // world)  # ranks step in lockstep: drop the remainder batches
    steps_per_epoch = math.ceil(nb_rank / accum)
    return stage.max_steps or cfg.max_steps or cfg.epochs * steps_per_epoch, steps_per_epoch


def length_bucketed(perm: List[int], lengths: List[int], bs: int, buckets: int,
                    gen: torch.Generator) -> List[List[int]]:
    """--length-buckets K: the batches of the epoch permutation ``perm`` when each window of K·bs of its
    positions is sorted by length (stable) before it is cut into batches of ``bs``; the batch order is
    then shuffled with ``gen`` (the epoch's generator, so that a resume sees the same batches)."""
    w = bs * buckets
    order = [i for k in range(0, len(perm), w) for i in sorted(perm[k : k + w], key=lambda i: lengths[i])]
    batches = [order[k : k + bs] for k in range(0, len(order), bs)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


class EpochPlan:
    """The micro-batches of one stage on one process (rank ``rank`` of ``world``).

    A stage that reads source data iterates over the method's examples and, when it also reads the
    target stream, pairs each micro-batch with ``batch_size`` target sentences drawn cyclically from a
    per-epoch permutation; a stage that reads no source data iterates over its target sentences."""

    def __init__(self, stage: Stage, examples: Sequence[Any], target: Optional[Sequence[Any]], cfg: Any,
                 rank: int = 0, world: int = 1, length_buckets: Optional[int] = None) -> None:
        self.stage = stage
        self.from_source = "source" in stage.streams
        self.items = list(examples) if self.from_source else list(target or [])
        self.target = list(target or []) if self.from_source else []
        self.seed, self.rank, self.world = cfg.seed, rank, world
        self.batch_size = cfg.batch_size
        self.accum = max(1, cfg.effective_batch_size // (cfg.batch_size * world))
        nb = math.ceil(len(self.items) / self.batch_size)
        self.batches_per_rank = max(1, nb // world)  # ranks step in lockstep: drop the remainder batches
        self.total, self.steps_per_epoch = stage_steps(stage, cfg, len(self.items), world)
        self.buckets = cfg.length_buckets if length_buckets is None else length_buckets
        self.lengths = [len(getattr(e, "src", e).tokens) for e in self.items] if self.buckets else []

    def epoch(self, epoch: int) -> Tuple[List[List[int]], List[int]]:
        """(this process's batches of example ids, the target permutation) of an epoch."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + hash_stage(self.stage.name) * 7919 + epoch)
        perm = torch.randperm(len(self.items), generator=gen).tolist()
        bs = self.batch_size
        batches = [perm[k : k + bs] for k in range(0, len(perm), bs)]
        if self.buckets:  # less padding, other batches (off by default)
            batches = length_bucketed(perm, self.lengths, bs, self.buckets, gen)
        mine = batches[self.rank :: self.world][: self.batches_per_rank]
        tperm = torch.randperm(len(self.target), generator=gen).tolist() if self.target else []
        return mine, tperm

    def group(self, mine: List[List[int]], tperm: List[int], pos: int) -> List[MicroBatch]:
        """The micro-batches of the optimizer step that starts at batch ``pos`` of the epoch."""
        out: List[MicroBatch] = []
        for gi, ids in enumerate(mine[pos : pos + self.accum]):
            chosen = [self.items[i] for i in ids]
            if not self.from_source:
                out.append(([], chosen))
                continue
            tex = None
            if tperm:
                k0 = (pos + gi) * self.batch_size
                tex = [self.target[tperm[(k0 + r) % len(tperm)]] for r in range(self.batch_size)]
            out.append((chosen, tex))
        return out
