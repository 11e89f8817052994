"""One optimizer step, the same for the trainer, the time estimate and the profiler: per micro-batch
collate, teacher outputs, forward (model and the method's loss), backward; then clipping, the
optimizer and the schedule. Each part runs in a `torch.profiler.record_function` range named as
`scripts/profile_step.py` reports it (``data``, ``teacher``, ``forward``, ``backward``, ``optimizer``)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, ContextManager, Dict, Optional, Sequence

import torch
from torch.profiler import record_function

from mclner.data.batches import to_device
from mclner.methods.base import Method, Stage
from mclner.training.batching import MicroBatch


class StepModule(torch.nn.Module):
    """The model and the method's loss as one module, so that DDP sees one forward per micro-batch.
    With ``zero_term`` (under DDP), parameters the loss did not use this step (ablations, heads of
    other stages) still join the graph with a zero gradient: DDP's reducer expects every parameter
    every step. Without it the step gives them their zero gradient after the backward passes instead
    (:func:`fill_unused_grads`): the same numbers, without the term's backward, which makes a dense
    zero tensor per parameter (2 % of a quick CPU step, docs/TRAINING.md "Where a step's time goes")."""

    def __init__(self, model: torch.nn.Module, method: Method, zero_term: bool = True) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.zero_term = zero_term

    def forward(self, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        out = self.method.loss(self.model, batch, stage, impl)
        if self.zero_term:
            out["loss"] = out["loss"] + 0.0 * sum(p.view(-1)[0] for p in self.model.parameters() if p.requires_grad)
        return out


def fill_unused_grads(model: torch.nn.Module) -> None:
    """A zero gradient for every trained parameter that got none (what StepModule's zero term gives
    them under DDP), so that AdamW treats them the same with and without DDP (weight decay, moments)."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


def autocast(amp: bool, device: torch.device) -> Callable[[], ContextManager]:
    """The context of forward passes: autocast on a GPU with --amp (bfloat16 where supported), else none."""
    if amp and device.type == "cuda":
        dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return lambda: torch.autocast("cuda", dtype=dt)
    return contextlib.nullcontext


@dataclass
class StepSetup:
    """What a step of one stage runs with (built once per stage)."""

    model: torch.nn.Module
    method: Method
    stage: Stage
    collator: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    device: torch.device
    impl: str
    step_module: StepModule
    ddp: Optional[torch.nn.Module] = None  # the DistributedDataParallel wrapper of step_module
    teacher: Optional[torch.nn.Module] = None
    scaler: Optional[torch.amp.GradScaler] = None  # None: no loss scaling
    amp: Callable[[], ContextManager] = contextlib.nullcontext
    max_grad_norm: float = 1.0
    guard: Any = None  # mclner.training.guards.NonFiniteGuard: skips (and stops after) non-finite steps

    def __post_init__(self) -> None:
        if self.scaler is None:
            self.scaler = torch.amp.GradScaler(self.device.type, enabled=False)


@dataclass
class StepOutput:
    terms: Dict[str, float]  # the loss terms, averaged over the micro-batches (``loss``: the total)
    stats: Dict[str, float]  # the method's other numbers (its loss dict's ``stats``), averaged alike
    grad_norm: float  # before clipping
    applied: bool  # False: the optimizer step was skipped (non-finite)


def _add(sums: Dict[str, float], values: Dict[str, Any], n: int) -> None:
    for k, v in values.items():
        sums[k] = sums.get(k, 0.0) + float(v.detach()) / n


def train_step(s: StepSetup, micro: Sequence[MicroBatch], step: int) -> StepOutput:
    """Optimizer step number ``step`` over the micro-batches ``micro`` (gradient accumulation: each
    micro-batch's loss is divided by their number)."""
    n = len(micro)
    terms: Dict[str, float] = {}
    stats: Dict[str, float] = {}
    module = s.ddp if s.ddp is not None else s.step_module
    for gi, (examples, target) in enumerate(micro):
        with record_function("data"):
            batch = to_device(s.method.collate(s.collator, examples, target, s.stage), s.device)
        if s.teacher is not None:
            with record_function("teacher"), torch.no_grad(), s.amp():
                batch.update(s.method.teacher_outputs(s.teacher, batch, s.stage, s.impl))
        # under DDP the gradients are all-reduced once, after the last micro-batch
        sync = gi == n - 1 or s.ddp is None
        with contextlib.nullcontext() if sync else s.ddp.no_sync():
            with record_function("forward"), s.amp():
                out = module(batch, s.stage, s.impl)
            with record_function("backward"):
                s.scaler.scale(out["loss"] / n).backward()
        _add(stats, out.pop("stats", {}), n)
        _add(terms, out, n)
    with record_function("optimizer"):
        if not s.step_module.zero_term:
            fill_unused_grads(s.model)
        s.scaler.unscale_(s.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(s.model.parameters(), s.max_grad_norm))
        applied = s.guard is None or s.guard.step_ok(step, terms["loss"], grad_norm, s.scaler.is_enabled())
        if applied:
            s.scaler.step(s.optimizer)  # a non-finite step is skipped; K in a row stop the run
        s.scaler.update()
        s.optimizer.zero_grad(set_to_none=True)
        s.scheduler.step()
    return StepOutput(terms, stats, grad_norm, applied)
