"""The state of a stage in training: the counters a resumable checkpoint keeps (:class:`TrainState`)
and what the loop, its steps and its callbacks share (:class:`StageRun`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from mclner.methods.base import Stage
from mclner.training.batching import EpochPlan
from mclner.training.step import StepSetup


@dataclass
class TrainState:
    """Where a stage is: saved as ``counters`` in every resumable checkpoint (``stop`` is not)."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    batch_pos: int = 0  # micro-batches of the epoch done
    best_f1: float = -1.0
    bad_evals: int = 0  # evaluations without improvement since the best
    last_eval_step: int = -1
    stop: bool = False  # early stopping decided

    def counters(self) -> Dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "stop"}

    def load(self, counters: Dict[str, Any]) -> None:
        for k, v in counters.items():
            if k != "stop" and hasattr(self, k):
                setattr(self, k, v)


@dataclass
class StageRun:
    """One stage being trained: its plan of batches, the step's set-up and the state."""

    stage: Stage
    sdir: Path  # stages/<name>
    plan: EpochPlan
    step: StepSetup
    is_main: bool
    eval_every: Optional[int]
    state: TrainState = field(default_factory=TrainState)
    t_stage: float = 0.0  # when the stage began (its wall time)
    t0: float = 0.0  # when its loop began (elapsed_s of the log)
    interrupted: bool = False  # --stop-after-steps: stopped as if killed

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def total(self) -> int:
        return self.plan.total

    def eval_due(self) -> bool:
        """Whether the step just done ends with an evaluation (--eval-every)."""
        return bool(self.eval_every) and self.state.step % self.eval_every == 0
