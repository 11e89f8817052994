"""A stage's set-up before its loop: the optimizer, the schedule, loss scaling and the module a step
runs (wrapped by DDP under torchrun), and the stage's state restored from its resumable checkpoint
when a run is resumed inside it."""

from __future__ import annotations

from typing import Any, Optional

import torch

from mclner.methods.base import Method, Stage
from mclner.training.build import make_optimizer, make_scheduler
from mclner.training.checkpoint import load_weights
from mclner.training.dist import restore_rng
from mclner.training.guards import NonFiniteGuard
from mclner.training.state import StageRun
from mclner.training.state_codec import has_training_state, load_training_state, restore_training_state
from mclner.training.step import StepModule, StepSetup, autocast


def make_step_setup(cfg: Any, env: Any, method: Method, stage: Stage, model: torch.nn.Module, collator: Any,
                    impl: str, total: int, first: bool, teacher: Optional[torch.nn.Module] = None) -> StepSetup:
    """What every step of ``stage`` runs with: AdamW over the parameters the stage trains, the schedule
    over ``total`` steps (``first``: the run's first stage, the only one --head-warmup-steps delays the
    encoder in), the float16 grad scaler where bfloat16 is missing, and the non-finite guard."""
    opt = make_optimizer(model, cfg)
    sched = make_scheduler(opt, total, cfg.warmup_ratio, cfg.head_warmup_steps if first else 0)
    use_scaler = cfg.amp and env.device.type == "cuda" and not torch.cuda.is_bf16_supported()
    step_module = StepModule(model, method, zero_term=env.distributed)
    return StepSetup(model, method, stage, collator, opt, sched, env.device, impl, step_module,
                     teacher=teacher, scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
                     amp=autocast(cfg.amp, env.device), max_grad_norm=cfg.max_grad_norm,
                     guard=NonFiniteGuard(stage=stage.name, device=env.device))  # stops after 3 in a row


def wrap_ddp(setup: StepSetup, env: Any) -> None:
    """Under torchrun: the step's module (model and the method's loss) in DistributedDataParallel."""
    from torch.nn.parallel import DistributedDataParallel

    setup.ddp = DistributedDataParallel(setup.step_module,
                                        device_ids=[env.device.index] if env.device.type == "cuda" else None)


def resume_stage(run: StageRun, env: Any) -> bool:
    """The weights, optimizer, schedule, scaler, counters and every rank's RNG state of the stage's
    resumable checkpoint (``stages/<stage>/last``), when it has one; True when restored."""
    last = run.sdir / "last"
    if not has_training_state(last):
        return False
    s = run.step
    load_weights(s.model, last, env.device)  # verifies the SHA-256 recorded at save
    ts = load_training_state(last)  # JSON + safetensors, verified; never unpickles
    counters = run.state.counters()  # checked: an edited state is a one-line error, not a traceback
    restore_training_state(last, ts, s.model, s.optimizer, s.scheduler, s.scaler, counters)
    run.state.load(counters)
    restore_rng(env, ts)  # every rank its own RNG state, as it was at the save
    return True
