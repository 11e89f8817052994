"""Processes and random streams of a run: the DDP environment, collectives on it, and the seeds and RNG
states that make a resume exact (every rank draws its own dropout masks)."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from mclner.training.state_codec import rng_state, set_rng_state


@dataclass
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup_env(cfg: Any) -> DistEnv:
    """This process's rank and device (``--device``, else its local GPU, else the CPU); joins the process
    group under torchrun (NCCL on GPUs, gloo on the CPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cfg.device:
        device = torch.device(cfg.device)
    elif torch.cuda.is_available():
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world, local, device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def hash_stage(stage: str) -> int:
    """A stable small integer per stage name (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(stage))


def stage_seed(seed: int, stage: str) -> int:
    """The seed of a stage's random stream (distinct from its data-order generators' seeds)."""
    return seed * 1_000_003 + hash_stage("rng/" + stage) * 7919


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def broadcast_flag(env: DistEnv, flag: bool) -> bool:
    """Rank 0's ``flag`` on every rank."""
    if not env.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], dtype=torch.float64)
    if env.device.type == "cuda":
        t = t.to(env.device)
    dist.broadcast(t, 0)
    return bool(t.item())


def broadcast_object(env: DistEnv, obj: Any) -> Any:
    """Rank 0's ``obj`` (anything JSON-like) on every rank."""
    if not env.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, 0)
    return box[0]


def gather_rng(env: DistEnv) -> List[Dict[str, Any]]:
    """Every rank's RNG states, indexed by rank, on rank 0 (a collective: all ranks call it); other
    ranks get an empty list. Exact resume under DDP needs them all: each rank draws its own dropout."""
    mine = rng_state()
    if not env.distributed:
        return [mine]
    box: Optional[List[Any]] = [None] * env.world if env.is_main else None
    dist.gather_object(mine, box, dst=0)
    return list(box) if box is not None else []


def restore_rng(env: DistEnv, ts: Dict[str, Any]) -> None:
    """Set this rank's RNG states from a training state. A state saved by a run with another number of
    processes (or by an older mclner, rank 0's only) restores rank 0 and leaves the others seeded by
    ``seed + rank``, with a note: that resume is not exact."""
    ranks = ts.get("rng_ranks")
    if isinstance(ranks, list) and len(ranks) == env.world:
        set_rng_state(ranks[env.rank])
        return
    if env.is_main:
        set_rng_state(ts["rng"])
        if env.distributed:
            saved = len(ranks) if isinstance(ranks, list) else 1
            print(f"note: the checkpoint holds the RNG states of {saved} process(es), this run has {env.world}; "
                  "ranks other than 0 start from fresh seeds (the resume is not bit-exact)")


def peak_memory(device: torch.device) -> Dict[str, float]:
    """This process's peak memory: ``peak_gpu_mem_mb`` on a GPU (since the last reset of the peak, at
    the start of each stage); ``process_max_rss_mb`` on the CPU, the process's peak so far."""
    if device.type == "cuda":
        return {"peak_gpu_mem_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)}
    import resource

    # ru_maxrss: the process's peak so far (KiB on Linux), not this stage's alone
    return {"process_max_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
