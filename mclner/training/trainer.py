"""The training engine behind `mclner train`: it runs the stages a method declares and knows no method.

Per stage: the student starts from the previous stage's best model (and, when the stage asks for it,
a frozen copy of that model is the teacher); the method prepares the stage's target data; one loop does
optimizer, schedule, gradient accumulation, AMP, clipping, evaluation, best checkpoint, early stopping,
DDP, resume and logging, and asks the method for the loss of each micro-batch. Each stage writes
``stages/<stage>/last`` (resumable) and ``stages/<stage>/best``; the final model is copied to
``<output_dir>/best``.

Exact resume: the data order of an epoch is a permutation drawn from a generator seeded by
(seed, stage, epoch); every stage after the first starts its random stream from a seed of (seed,
stage), so that a resume at a stage boundary, or a stage reused from another run, changes nothing;
resumable checkpoints are written only between optimizer steps, and they hold the optimizer,
scheduler, grad scaler, the position in the epoch and every RNG state of every rank (each DDP process
draws its own dropout masks).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from mclner.data.batches import to_device
from mclner.errors import UserError
from mclner.evaluation import evaluate, format_scores
from mclner.methods.base import Context, Method, Stage
from mclner.nn.encoder import hf_encoders
from mclner.schema import entity_types
from mclner.training.checkpoint import (
    checkpoint_exists,
    copy_checkpoint,
    has_training_state,
    load_training_state,
    load_weights,
    read_done,
    rng_state,
    save_checkpoint,
    set_rng_state,
    update_model_config,
    write_done,
)
from mclner.training.config import TrainConfig, recorded_impl
from mclner.training.guards import NonFiniteGuard, json_safe
from mclner.training.model_card import refresh_model_card
from mclner.training.reuse import link_stages, option_diff, plan_reuse
from mclner.training.rundir import RunDir


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


def setup_env(cfg: TrainConfig) -> DistEnv:
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


def _barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def _broadcast_float(env: DistEnv, x: float) -> float:
    """Rank 0's value of ``x`` on every rank."""
    if not env.distributed:
        return x
    t = torch.tensor([x], dtype=torch.float64)
    if env.device.type == "cuda":
        t = t.to(env.device)
    dist.broadcast(t, 0)
    return float(t.item())


def _broadcast_flag(env: DistEnv, flag: bool) -> bool:
    return bool(_broadcast_float(env, 1.0 if flag else 0.0))


def _gather_rng(env: DistEnv) -> List[Dict[str, Any]]:
    """Every rank's RNG states, indexed by rank, on rank 0 (a collective: all ranks call it); other
    ranks get an empty list. Exact resume under DDP needs them all: each rank draws its own dropout."""
    mine = rng_state()
    if not env.distributed:
        return [mine]
    box: Optional[List[Any]] = [None] * env.world if env.is_main else None
    dist.gather_object(mine, box, dst=0)
    return list(box) if box is not None else []


def _restore_rng(env: DistEnv, ts: Dict[str, Any]) -> None:
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


# ----------------------------------------------------------------------------- data


@dataclass
class Data:
    train: List[Any]
    dev: List[Any]
    target_test: List[Any]
    target_unlabeled: List[Any]
    label_map: Any
    examples: List[Any]  # the method's training examples (made once per run)
    segmentation: Any = None  # mclner.data.segmentation.Segmentation of translations into the target


def _subset(items: List[Any], k: Optional[int], seed: int) -> List[Any]:
    if k is None or len(items) <= k:
        return items
    idx = sorted(random.Random(seed).sample(range(len(items)), k))
    return [items[i] for i in idx]


def _load(spec: str, split: str, lang: Optional[str] = None) -> List[Any]:
    from mclner.data.readers import load_sentences

    try:
        return list(load_sentences(spec, split=split, lang=lang))
    except FileNotFoundError as exc:
        raise UserError(f"cannot read {spec!r} ({split}): {exc}") from None


@dataclass
class RunSentences:
    """The run's sentences as read and filtered, before the method prepares its examples."""

    train: List[Any]
    source_index: List[int]  # position of each training sentence in the source's train split
    source_total: int  # that split's size
    dev: List[Any]
    target_test: List[Any]  # the first --max-eval-sentences
    target_test_all: List[Any]
    target_unlabeled: List[Any]


def read_sentences(cfg: TrainConfig, method: Method) -> RunSentences:
    """Source train/dev, target test and (when a stage of the method reads it) unlabelled target text,
    with the run's filters and subsets applied."""
    split = _load(cfg.source, "train")
    # (position in the split, sentence): methods may read per-sentence files given for the whole split
    kept = [(k, s) for k, s in enumerate(split) if s.tags is not None]
    if cfg.max_words:
        kept = [(k, s) for k, s in kept if 0 < len(s.tokens) <= cfg.max_words]
    kept = _subset(kept, cfg.max_train_sentences, cfg.seed)
    train = [s for _, s in kept]
    if not train:
        raise UserError(f"source {cfg.source!r} has no labelled training sentences (after --max-words)")
    if cfg.target_dev:
        dev = _load(cfg.target_dev, "dev", cfg.target_lang)
    else:
        try:
            dev = _load(cfg.source, "dev")
        except (KeyError, UserError) as exc:  # a source without a dev split: the last model is kept
            if "no dev" not in str(exc) and not isinstance(exc, KeyError):
                raise
            dev = []
    dev = [s for s in dev if s.tags is not None][: cfg.max_eval_sentences or None]
    tgt_test_all: List[Any] = []
    unl: List[Any] = []
    if cfg.target:
        tgt_test_all = [s for s in _load(cfg.target, "test", cfg.target_lang) if s.tags is not None]
    if method.needs_unlabeled():
        spec = cfg.target_unlabeled or cfg.target
        if not spec:
            raise UserError(f"method {method.name!r} ({', '.join(s.name for s in method.stages())}) needs "
                            "unlabelled target text: pass --target-unlabeled or --target")
        raw_text = cfg.target_unlabeled_format == "text" and cfg.target_unlabeled
        raw = raw_target_text(cfg, tgt_test_all) if raw_text else _load(spec, "train", cfg.target_lang)
        unl = [type(s)(list(s.tokens), None, getattr(s, "lang", cfg.target_lang)) for s in raw]
        if cfg.max_words:
            unl = [s for s in unl if 0 < len(s.tokens) <= cfg.max_words]
        unl = _subset(unl, cfg.max_unlabeled_sentences, cfg.seed + 1)
    return RunSentences(train, [k for k, _ in kept], len(split), dev, tgt_test_all[: cfg.max_eval_sentences or None],
                        tgt_test_all, unl)


def load_data(cfg: TrainConfig, method: Method, is_main: bool = True, label_map: Any = None) -> Data:
    """The run's sentences (:func:`read_sentences`), then the method's training examples."""
    from mclner.data.grid import LabelMap

    r = read_sentences(cfg, method)
    if label_map is None:
        label_map = LabelMap(entity_types(r.train))
    segmentation = _target_segmentation(cfg, r.target_unlabeled, r.target_test_all)
    ctx = Context(cfg, torch.device("cpu"), "reference", label_map, is_main,
                  source_index=r.source_index, source_total=r.source_total, segmentation=segmentation)
    examples = method.prepare_examples(r.train, ctx)
    return Data(r.train, r.dev, r.target_test, r.target_unlabeled, label_map, examples, segmentation)


def stage_steps(stage: Stage, cfg: TrainConfig, n_examples: int, world: int = 1) -> Tuple[int, int]:
    """(optimizer steps of the stage, steps per epoch) for ``n_examples`` examples (source examples, or
    target sentences for a stage that reads no source data) on ``world`` processes."""
    bs = cfg.batch_size
    accum = max(1, cfg.effective_batch_size // (bs * world))
    nb = math.ceil(n_examples / bs)
    nb_rank = max(1, nb // world)  # ranks step in lockstep: drop the remainder batches
    steps_per_epoch = math.ceil(nb_rank / accum)
    return stage.max_steps or cfg.max_steps or cfg.epochs * steps_per_epoch, steps_per_epoch


def raw_target_text(cfg: TrainConfig, test: List[Any]) -> List[Any]:
    """--target-unlabeled as raw text (--target-unlabeled-format text), split like the target corpus."""
    from mclner.data.segmenters import read_raw_text

    return read_raw_text(cfg.target_unlabeled, cfg.target_lang, cfg.target_segmentation, cfg.target_segmenter, test)


def _target_segmentation(cfg: TrainConfig, unlabeled: List[Any], test: List[Any]) -> Any:
    """--target-segmentation resolved on the run's target text: the unlabelled target text (read for
    ``auto`` even when no stage uses it, if --target-unlabeled names it), else the whole target test set."""
    from mclner.data.segmentation import resolve_segmentation

    mode = cfg.target_segmentation or "auto"
    spec = cfg.target_unlabeled or cfg.target
    if cfg.target_unlabeled and cfg.target_unlabeled_format == "text":
        unlabeled = []  # split by the segmentation decided on the test set: no evidence of its own
    elif not unlabeled and cfg.target_unlabeled and mode == "auto":
        unlabeled = _load(cfg.target_unlabeled, "train", cfg.target_lang)
    if unlabeled:
        return resolve_segmentation(mode, cfg.target_lang, unlabeled, f"the unlabelled target text ({spec})")
    return resolve_segmentation(mode, cfg.target_lang, test, f"the target test set ({cfg.target})")


# ----------------------------------------------------------------------------- model


def load_encoder_or_fail(name: str):
    from mclner.encoders import load_encoder

    try:
        return load_encoder(name)
    except (FileNotFoundError, OSError, KeyError) as exc:
        raise UserError(f"cannot load encoder {name!r}: {exc}") from None


def build_model(cfg: TrainConfig, method: Method, label_map: Any) -> tuple:
    """(model, tokenizer) of ``method`` on the configured encoder."""
    tokenizer, encoder = load_encoder_or_fail(cfg.encoder)
    model = method.build_model(encoder, label_map)
    if cfg.freeze_embeddings:
        for enc in hf_encoders(model):
            enc.get_input_embeddings().weight.requires_grad_(False)
    return model, tokenizer


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    groups: Dict[str, List[torch.nn.Parameter]] = {"enc": [], "enc_nd": [], "head": [], "head_nd": []}
    enc_ids = {id(p) for enc in hf_encoders(model) for p in enc.parameters()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "enc" if id(p) in enc_ids else "head"
        # no weight decay on biases and norm scales
        groups[part + ("_nd" if p.dim() <= 1 else "")].append(p)
    spec = [
        {"params": groups["enc"], "lr": cfg.encoder_lr, "weight_decay": cfg.weight_decay, "name": "encoder"},
        {"params": groups["enc_nd"], "lr": cfg.encoder_lr, "weight_decay": 0.0, "name": "encoder"},
        {"params": groups["head"], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay, "name": "head"},
        {"params": groups["head_nd"], "lr": cfg.head_lr, "weight_decay": 0.0, "name": "head"},
    ]
    return torch.optim.AdamW([g for g in spec if g["params"]])


def make_scheduler(opt: torch.optim.Optimizer, total: int, warmup_ratio: float, encoder_delay: int = 0):
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0. ``encoder_delay`` N
    (--head-warmup-steps): the encoder's groups get factor 0 for the first N steps (their gradients are
    still computed), then their own warm-up of the same length starts, capped by the common decay."""
    warm = int(round(total * warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    if encoder_delay <= 0:
        return torch.optim.lr_scheduler.LambdaLR(opt, f)

    def f_enc(step: int) -> float:
        if step < encoder_delay:
            return 0.0
        return min(f(step), (step - encoder_delay + 1) / (warm + 1))

    return torch.optim.lr_scheduler.LambdaLR(opt, [f_enc if g.get("name") == "encoder" else f
                                                   for g in opt.param_groups])


# ----------------------------------------------------------------------------- logging


class StepLogger:
    """JSONL log of every optimizer step (each loss term) and evaluation; TensorBoard when installed."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.tb = None
        if not enabled:
            return
        out_dir.mkdir(parents=True, exist_ok=True)
        self.f = open(out_dir / "log.jsonl", "a", encoding="utf-8")
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out_dir / "tensorboard"))
        except Exception:  # tensorboard is optional
            self.tb = None

    def log(self, record: Dict[str, Any]) -> None:
        if not self.enabled:
            return
        self.f.write(json.dumps(json_safe(record)) + "\n")  # valid JSON: no bare NaN/Infinity
        self.f.flush()
        if self.tb is not None and "step" in record:
            prefix = record.get("stage", "train")
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{prefix}/{k}", v, record["step"])

    def close(self) -> None:
        if self.enabled:
            self.f.close()
            if self.tb is not None:
                self.tb.close()


# ----------------------------------------------------------------------------- engine


class StepModule(torch.nn.Module):
    """The model and the method's loss as one module, so that DDP sees one forward per micro-batch.
    Under DDP (``ddp``), parameters the loss did not use this step (ablations, heads of other stages)
    still join the graph with a zero gradient: DDP's reducer expects every parameter every step.
    Without DDP the trainer gives them their zero gradient after the backward passes instead
    (:func:`fill_unused_grads`): the same numbers, without the term's backward, which makes a dense
    zero tensor per parameter (2 % of a quick CPU step, docs/TRAINING.md "Where a step's time goes")."""

    def __init__(self, model: torch.nn.Module, method: Method, ddp: bool = True) -> None:
        super().__init__()
        self.model = model
        self.method = method
        self.ddp = ddp

    def forward(self, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, torch.Tensor]:
        out = self.method.loss(self.model, batch, stage, impl)
        if self.ddp:
            out["loss"] = out["loss"] + 0.0 * sum(p.view(-1)[0] for p in self.model.parameters() if p.requires_grad)
        return out


def fill_unused_grads(model: torch.nn.Module) -> None:
    """A zero gradient for every trained parameter that got none (what StepModule's zero term gives
    them under DDP), so that AdamW treats them the same with and without DDP (weight decay, moments)."""
    for p in model.parameters():
        if p.requires_grad and p.grad is None:
            p.grad = torch.zeros_like(p)


_OPS = ("biaffine", "cln_head", "info_nce", "sup_con")


# Options that do not change what a run trains: --resume may change them.
_RESUME_FREE = ("output_dir", "impl", "fused", "device", "log_every", "progress", "save_every", "stop_after_steps",
                "method_options")


def run_args(cfg: TrainConfig, method: Any) -> Dict[str, Any]:
    """What ``training_args.json`` and every checkpoint record: the run's options, and ``method_config``,
    the method's options as resolved (defaults included), so that a later change of a default neither
    changes a resumed run nor the command `mclner report` rebuilds."""
    return {**cfg.to_dict(), "method_config": json.loads(json.dumps(dataclasses.asdict(method.config)))}


def check_resume_args(run_dir: Path, args: Dict[str, Any], method: Any) -> None:
    """--resume continues the recorded run only with the options it was trained with: a UserError that
    names each option that differs (a changed option would silently make another run)."""
    try:
        rec = json.loads((run_dir / "training_args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no record to compare: the run folder is checked, with its own errors, when the run starts
    if not isinstance(rec, dict):
        return
    diff = option_diff(rec, args, method, _RESUME_FREE)
    if diff:
        what = ", ".join(f"{d.flag} {d.new!r} (the run: {d.old!r})" for d in diff)
        raise UserError(f"--resume: {run_dir} was trained with other options: {what}; resume with the run's "
                        "values, or start a new run in another --output-dir")


def _run_impl(run_dir: Path) -> Optional[str]:
    """The implementation recorded in ``run_dir/training_args.json`` (None when there is none to read:
    the run folder is checked, with its own errors, when the run starts)."""
    try:
        return recorded_impl(json.loads((run_dir / "training_args.json").read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


class Trainer:
    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 reuse_from: Optional[str] = None) -> None:
        cfg.validate()
        self.cfg = cfg
        self.method = cfg.method_instance()
        self.resume = resume
        self.overwrite = overwrite
        self.env = setup_env(cfg)
        self.out = Path(cfg.output_dir)
        from mclner.predictor import check_impl, resolve_impl

        self.impl = resolve_impl(cfg.impl, cfg.fused)  # default auto; --fused = --impl auto
        # --resume without --impl/--fused continues with the implementation the run used (a run from
        # before auto became the default: reference), so its steps are not mixed from two implementations.
        kept = _run_impl(self.out) if resume and cfg.impl is None and not cfg.fused else None
        self.impl_kept = kept is not None
        if kept is not None:
            self.impl = kept
        try:
            check_impl(self.impl, self.env.device)
        except UserError as exc:
            if not self.impl_kept:
                raise
            raise UserError(f"{exc} (the run used it; pass --impl to resume with another)") from None
        # training_args.json and every checkpoint record the implementation the run uses
        self.cfg = replace(cfg, impl=self.impl)
        if resume:
            check_resume_args(self.out, run_args(self.cfg, self.method), self.method)
        # --reuse-stages-from: the stages taken from another run (mclner/training/reuse.py)
        self.reuse_from = Path(reuse_from) if reuse_from else None
        self.reused: List[str] = []
        if self.reuse_from is not None:
            if resume:
                raise UserError("--reuse-stages-from starts a new run; it cannot be combined with --resume")
            if self.reuse_from.resolve() == self.out.resolve():
                raise UserError(f"--reuse-stages-from {reuse_from} is the --output-dir itself")
            self.reused = plan_reuse(self.reuse_from, run_args(self.cfg, self.method), self.method, _RESUME_FREE)
        seed_everything(cfg.seed + self.env.rank)

    # -- helpers
    def _amp(self):
        if self.cfg.amp and self.env.device.type == "cuda":
            dt = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return torch.autocast("cuda", dtype=dt)
        return contextlib.nullcontext()

    def _context(self) -> Context:
        return Context(self.cfg, self.env.device, self.impl, self.data.label_map, self.env.is_main, self.logger.log,
                       segmentation=self.data.segmentation)

    def _save(self, dest: Path, model: torch.nn.Module, **kw: Any) -> None:
        from mclner.data.segmenters import text_record

        text = text_record(self.data.segmentation.mode, self.cfg.target_lang, self.cfg.target_segmenter)
        save_checkpoint(dest, model, self.tokenizer, self.data.label_map, run_args(self.cfg, self.method),
                        method=self.method, text=text, **kw)

    def run(self) -> Dict[str, Any]:
        # checks --output-dir and locks it for the run; nothing in it is deleted before prepare()
        with RunDir(self.out, self.resume, self.overwrite, main=self.env.is_main) as self.rundir:
            return self._run()

    def _run(self) -> Dict[str, Any]:
        cfg, env = self.cfg, self.env
        _barrier(env)
        data = load_data(cfg, self.method, env.is_main)
        model, tokenizer = build_model(cfg, self.method, data.label_map)
        init_report = self.method.init_model(model, data.examples, data.label_map)
        model.to(env.device)
        self.tokenizer, self.data = tokenizer, data
        self.collator = self.method.make_collator(tokenizer, data.label_map, cfg.max_length)
        self.rundir.prepare()  # options, data and encoder are valid: --overwrite may clear the folder now
        self.logger = StepLogger(self.out, env.is_main)
        if env.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "training_args.json").write_text(json.dumps(run_args(cfg, self.method), indent=2))
            self.logger.log({"event": "data", "method": self.method.name, "train": len(data.train),
                             "dev": len(data.dev), "target_test": len(data.target_test),
                             "target_unlabeled": len(data.target_unlabeled), "types": list(data.label_map.types),
                             "impl": self.impl, "impl_selected": self._selected,
                             "target_segmentation": data.segmentation.to_dict()})
            if init_report:
                self.logger.log({"event": "init", **init_report})
            self._banner()
            if self.reused:
                link_stages(self.reuse_from, self.out, self.reused, run_args(cfg, self.method))
                self.logger.log({"event": "reused_stages", "from": str(self.reuse_from), "stages": self.reused})
                print(f"reusing the finished stage(s) {', '.join(self.reused)} of {self.reuse_from}")
        _barrier(env)
        summary: Dict[str, Any] = {"method": self.method.name, "target_segmentation": data.segmentation.to_dict(),
                                   "stages": {}}
        if self.reused:
            summary["reused_stages"] = {"from": str(self.reuse_from), "stages": self.reused}
        prev_best: Optional[Path] = None
        # what the run trains (e.g. without frozen embeddings); a stage may narrow it (Method.trainable)
        base_trainable = {n: p.requires_grad for n, p in model.named_parameters()}
        try:
            stages = self.method.stages()
            for stage in stages:
                sdir = self.out / "stages" / stage.name
                done = read_done(sdir) if (self.resume or stage.name in self.reused) else None
                if done is not None:
                    self.method.prepare_stage(model, stage)
                    if self._calibrate(model, stage, sdir, done) and env.is_main:
                        write_done(sdir, done)
                    summary["stages"][stage.name] = done
                    prev_best = sdir / "best"
                    continue
                if stage is not stages[0]:
                    # every later stage draws from its own stream (dropout, sampling), seeded by (seed,
                    # stage): the same whether the stage follows its predecessor in one process, a resume
                    # at the boundary or stages reused from another run. The first stage continues the
                    # stream that initialised the model.
                    seed_everything(stage_seed(cfg.seed, stage.name) + env.rank)
                teacher, target = None, None
                if prev_best is not None:
                    self._load_weights(model, prev_best)
                self.method.prepare_stage(model, stage)
                self._set_trainable(model, stage, base_trainable)
                if stage.teacher:
                    teacher = copy.deepcopy(model).eval()
                    for p in teacher.parameters():
                        p.requires_grad_(False)
                if "target" in stage.streams:
                    target, counts = self.method.target_data(stage, teacher, self.data.target_unlabeled,
                                                             self.collator, self._context())
                    self.logger.log({"event": "target_data", "stage": stage.name, **counts})
                    summary.setdefault("target_data", {})[stage.name] = counts
                result = self.fit(stage, model, teacher, target)
                if result.get("interrupted"):
                    summary["interrupted"] = True
                    return summary
                self._calibrate(model, stage, sdir, result)
                summary["stages"][stage.name] = result
                if env.is_main:
                    write_done(sdir, result)
                _barrier(env)
                prev_best = sdir / "best"
            # final model: the last stage's best
            self._load_weights(model, prev_best)
            if env.is_main:
                copy_checkpoint(prev_best, self.out / "best")
                summary["final"] = self._final_eval(model)
                (self.out / "results.json").write_text(json.dumps(summary, indent=2, default=float))
                refresh_model_card(self.out / "best", summary["final"])  # the card shows the final scores
                self._where()
        finally:
            self.logger.close()
        return summary

    def _set_trainable(self, model: torch.nn.Module, stage: Stage, base: Dict[str, bool]) -> None:
        keep = self.method.trainable(stage)
        for n, p in model.named_parameters():
            p.requires_grad_(base.get(n, True) and (keep is None or bool(keep(n))))

    # -- what the run prints (rank 0)
    def _say(self, msg: str) -> None:
        """One line to stdout, above a progress bar when one is shown."""
        bar = getattr(self, "_pbar", None)
        if bar is not None:
            bar.write(msg)
        else:
            print(msg, flush=True)

    @functools.cached_property
    def _selected(self) -> Dict[str, str]:
        """What each op runs under ``self.impl`` here, in float32 ({} when that cannot be told)."""
        try:
            from mclner.ops import selected_impl

            if self.impl != "auto":
                return {op: self.impl for op in _OPS}
            return {op: selected_impl(op, self.env.device, torch.float32) for op in _OPS}
        except Exception:  # only informative (logs and the banner)
            return {}

    def _banner(self) -> None:
        cfg, d, env = self.cfg, self.data, self.env
        impl = self.impl
        if impl == "auto" and self._selected.get("biaffine"):
            impl = f"auto ({self._selected['biaffine']} here)"
        if self.impl_kept:
            impl += " (the run's own: --resume keeps it)"
        stages = ", ".join(s.name for s in self.method.stages())
        where = f"{env.device}" + (f" x {env.world} processes" if env.distributed else "")
        self._say(f"mclner train: method {self.method.name} (stages: {stages}); device {where}; impl {impl}; "
                  f"encoder {cfg.encoder}")
        sizes = [f"{len(d.train)} source train", f"{len(d.dev)} dev", f"{len(d.target_test)} target test"]
        if d.target_unlabeled:
            sizes.append(f"{len(d.target_unlabeled)} unlabelled target")
        self._say(f"data: {', '.join(sizes)} sentences; types {', '.join(d.label_map.types)}; "
                  f"output {self.out.resolve()}")

    def _where(self) -> None:
        out = self.out
        self._say(f"done. best model: {out / 'best'} (mclner predict {out / 'best'} --text '...')")
        self._say(f"results: {out / 'results.json'}; log: {out / 'log.jsonl'}; stages: {out / 'stages'}/*/best, last")
        self._say(f"plots and report: mclner report {out}")

    def _calibrate(self, model: torch.nn.Module, stage: Stage, sdir: Path, result: Dict[str, Any]) -> bool:
        """Let the method choose decoding settings for the stage's best model on the source dev set
        (once; kept in ``result`` and the stage's best checkpoint) and set them on ``model``, so that
        the next stage's teacher and the final model decode with them. True when computed now."""
        env = self.env
        fields = result.get("calibrated")
        computed = fields is None
        if computed:
            if not (self.method.calibrates() and self.data.dev):
                return False
            self._load_weights(model, sdir / "best")
            found = self.method.calibrate(model, self.data.dev, self.collator, self._context()) if env.is_main else {}
            # every rank takes rank 0's choice (model-config numbers only)
            has = _broadcast_flag(env, bool(found))
            if not has:
                return False
            keys = sorted(found["model"]) if env.is_main else []
            if env.distributed:
                box = [keys]
                dist.broadcast_object_list(box, 0)
                keys = box[0]
            fields = {k: _broadcast_float(env, float(found["model"][k]) if env.is_main else 0.0) for k in keys}
            result["calibrated"] = fields
            result.update(fields)
            if env.is_main:
                result.update({k: v for k, v in found.items() if k not in ("model", "message")})
                update_model_config(sdir / "best", **fields)
                self.logger.log({"event": "calibration", "stage": stage.name, **fields})
                if found.get("message"):
                    print(f"[{stage.name}] {found['message']}")
        for k, v in fields.items():
            setattr(model.config, k, v)
        return computed

    def _load_weights(self, model: torch.nn.Module, path: Optional[Path]) -> None:
        if path is None:
            return
        load_weights(model, path, self.env.device)  # verifies the SHA-256 recorded at save

    def _evaluate(self, model, sentences) -> Dict[str, Any]:
        return evaluate(model, sentences, self.collator, self.data.label_map, batch_size=2 * self.cfg.batch_size,
                        device=self.env.device, impl=self.impl)

    def _final_eval(self, model) -> Dict[str, Any]:
        res: Dict[str, Any] = {}
        if self.data.dev:
            res["source_dev"] = self._evaluate(model, self.data.dev)
        if self.data.target_test:
            res["target_test"] = self._evaluate(model, self.data.target_test)
            print(f"target test ({self.cfg.target}):\n{format_scores(res['target_test'])}")
        self.logger.log({"event": "final", **{k: v["f1"] for k, v in res.items()}})
        return res

    # -- one stage
    def fit(self, stage: Stage, model: torch.nn.Module, teacher=None, target=None) -> Dict[str, Any]:
        cfg, env = self.cfg, self.env
        name = stage.name
        sdir = self.out / "stages" / name
        # A stage that reads no source data iterates over its target sentences instead.
        from_source = "source" in stage.streams
        examples = self.data.examples if from_source else list(target or [])
        if not examples:
            raise UserError(f"stage {name}: no {'training examples' if from_source else 'target sentences'}")
        bs = cfg.batch_size
        accum = max(1, cfg.effective_batch_size // (bs * env.world))
        nb = math.ceil(len(examples) / bs)
        nb_rank = max(1, nb // env.world)  # ranks step in lockstep: drop the remainder batches
        total, _ = stage_steps(stage, cfg, len(examples), env.world)

        t_stage = time.time()
        if env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(env.device)
        opt = make_optimizer(model, cfg)
        # --head-warmup-steps: only the run's first stage starts from fresh heads
        first = stage.name == self.method.stages()[0].name
        sched = make_scheduler(opt, total, cfg.warmup_ratio, cfg.head_warmup_steps if first else 0)
        use_scaler = cfg.amp and env.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        st = {"step": 0, "epoch": 0, "batch_pos": 0, "best_f1": -1.0, "bad_evals": 0, "last_eval_step": -1}

        last = sdir / "last"
        guard = NonFiniteGuard(stage=name, device=env.device)  # stops after 3 non-finite steps in a row
        if self.resume and has_training_state(last):
            self._load_weights(model, last)
            ts = load_training_state(last)  # JSON + safetensors, verified; never unpickles
            opt.load_state_dict(ts["optimizer"])
            sched.load_state_dict(ts["scheduler"])
            scaler.load_state_dict(ts["scaler"])
            st.update(ts["counters"])
            _restore_rng(env, ts)  # every rank its own RNG state, as it was at the save
            if env.is_main:
                print(f"[{name}] resumed from {last} at step {st['step']}")

        step_module = StepModule(model, self.method, ddp=env.distributed)
        ddp: torch.nn.Module = step_module
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ddp = DistributedDataParallel(step_module,
                                          device_ids=[env.device.index] if env.device.type == "cuda" else None)

        def save_last() -> None:
            rngs = _gather_rng(env)  # called on every rank: each one's RNG state goes to rank 0
            if not env.is_main:
                return
            state = {
                "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "scaler": scaler.state_dict(),
                "counters": dict(st), "rng": rngs[0], "rng_ranks": rngs, "stage": name, "total_steps": total,
            }
            self._save(last, model, training_state=state, extra={"stage": name, "step": st["step"]})

        def do_eval() -> bool:
            """Evaluate on the dev set, keep the best, save a resumable checkpoint; True = stop early."""
            stop = False
            st["last_eval_step"] = st["step"]  # on every rank: they all take the same branches after
            if env.is_main:
                if self.data.dev:
                    res = self._evaluate(model, self.data.dev)
                    f1 = res["f1"]
                    improved = f1 > st["best_f1"] or not stage.select_best
                    rec = {"event": "eval", "stage": name, "step": st["step"], "epoch": st["epoch"],
                           "dev_f1": f1, "dev_precision": res["precision"], "dev_recall": res["recall"]}
                    bias = float(getattr(model.config, "none_bias", 0.0) or 0.0)
                    extra = ""
                    if bias:  # a calibrated decoding bias is in use: the plain argmax score beside it
                        arg = evaluate(model, self.data.dev, self.collator, self.data.label_map,
                                       batch_size=2 * cfg.batch_size, device=env.device, impl=self.impl, none_bias=0.0)
                        rec["dev_f1_argmax"] = arg["f1"]
                        extra = f" (NONE bias {bias:g}; argmax F1 {100 * arg['f1']:.2f})"
                    self.logger.log(rec)
                    if improved:
                        st["best_f1"], st["bad_evals"] = f1, 0
                        self._save(sdir / "best", model, extra={"stage": name, "step": st["step"], "dev": res})
                    else:
                        st["bad_evals"] += 1
                    self._say(f"[{name}] step {st['step']}/{total} dev P {100 * res['precision']:.2f} "
                              f"R {100 * res['recall']:.2f} F1 {100 * f1:.2f}{extra}; best F1 "
                              f"{100 * st['best_f1']:.2f}" + (" (new best, saved)" if improved else
                                                               f" ({st['bad_evals']} without improvement)"))
                    stop = cfg.patience > 0 and st["bad_evals"] >= cfg.patience
            save_last()
            stop = _broadcast_flag(env, stop)
            _barrier(env)
            return stop

        model.train()
        if teacher is not None:
            teacher.to(env.device)
        pbar = None
        if cfg.progress and env.is_main and sys.stderr.isatty():
            from tqdm.auto import tqdm

            pbar = tqdm(total=total, initial=st["step"], desc=name, dynamic_ncols=True)
        self._pbar = pbar
        # Without a bar (--no-progress, output to a file or pipe) a line every `every` steps, and at
        # least once a minute: the loss terms, the rate and the time left.
        every = max(1, min(100, total // 20))
        step0, last_line = st["step"], time.time()
        stop = False
        t0 = time.time()
        lengths = [len(getattr(e, "src", e).tokens) for e in examples] if cfg.length_buckets else []
        while st["step"] < total and not stop:
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + hash_stage(name) * 7919 + st["epoch"])
            perm = torch.randperm(len(examples), generator=gen).tolist()
            all_batches = [perm[k : k + bs] for k in range(0, len(perm), bs)]
            if cfg.length_buckets:  # less padding, other batches (off by default)
                all_batches = length_bucketed(perm, lengths, bs, cfg.length_buckets, gen)
            mine = all_batches[env.rank :: env.world][:nb_rank]
            tperm: List[int] = []
            if target and from_source:
                tperm = torch.randperm(len(target), generator=gen).tolist()
            bi = st["batch_pos"]
            while bi < len(mine):
                group = mine[bi : bi + accum]
                sums: Dict[str, float] = {}
                for gi, ids in enumerate(group):
                    if not from_source:
                        batch = self.method.collate(self.collator, [], [examples[i] for i in ids])
                    else:
                        tex = None
                        if tperm:
                            k0 = (bi + gi) * bs
                            tex = [target[tperm[(k0 + r) % len(tperm)]] for r in range(bs)]
                        batch = self.method.collate(self.collator, [examples[i] for i in ids], tex)
                    batch = to_device(batch, env.device)
                    if teacher is not None:
                        with torch.no_grad(), self._amp():
                            batch.update(self.method.teacher_outputs(teacher, batch, stage, self.impl))
                    sync = gi == len(group) - 1 or not env.distributed
                    ctx = contextlib.nullcontext() if sync else ddp.no_sync()
                    with ctx:
                        with self._amp():
                            out = ddp(batch, stage, self.impl)
                        scaler.scale(out["loss"] / len(group)).backward()
                    for k, v in out.items():
                        sums[k] = sums.get(k, 0.0) + float(v.detach()) / len(group)
                if not env.distributed:
                    fill_unused_grads(model)
                scaler.unscale_(opt)
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                if guard.step_ok(st["step"] + 1, sums["loss"], float(gnorm), scaler.is_enabled()):
                    scaler.step(opt)  # a non-finite step is skipped; K in a row stop the run
                scaler.update()
                opt.zero_grad(set_to_none=True)
                sched.step()
                bi += len(group)
                st["step"] += 1
                st["batch_pos"] = bi
                if st["step"] % cfg.log_every == 0:
                    lrs = {f"lr_{g['name']}": g["lr"] for g in opt.param_groups}
                    self.logger.log({"stage": name, "step": st["step"], "epoch": st["epoch"], **sums,
                                     "grad_norm": float(gnorm), **lrs, "elapsed_s": time.time() - t0})
                if pbar is not None:
                    pbar.update(1)
                    pbar.set_postfix(loss=f"{sums['loss']:.4f}")
                elif env.is_main and (st["step"] % every == 0 or time.time() - last_line > 60 or st["step"] == total):
                    last_line = time.time()
                    rate = (st["step"] - step0) / max(1e-9, last_line - t0)
                    eta = (total - st["step"]) / rate if rate > 0 else float("nan")
                    terms = " ".join(f"{k} {v:.4f}" for k, v in sums.items() if k != "tc_pairs")
                    self._say(f"[{name}] step {st['step']}/{total} {terms} | {rate:.2f} steps/s, "
                              f"{_duration(eta)} left")
                if cfg.eval_every and st["step"] % cfg.eval_every == 0:
                    stop = do_eval()
                elif cfg.save_every and st["step"] % cfg.save_every == 0:
                    save_last()
                if cfg.stop_after_steps and st["step"] >= cfg.stop_after_steps:
                    if pbar is not None:
                        pbar.close()
                    self._pbar = None
                    return {"interrupted": True, "step": st["step"]}
                if stop or st["step"] >= total:
                    break
            else:
                st["epoch"] += 1
                st["batch_pos"] = 0
                if not cfg.eval_every:
                    stop = do_eval()
        if st["last_eval_step"] != st["step"]:
            do_eval()
        if pbar is not None:
            pbar.close()
        self._pbar = None
        if env.is_main and not checkpoint_exists(sdir / "best"):  # no dev set: the last model is the result
            self._save(sdir / "best", model, extra={"stage": name, "step": st["step"]})
        _barrier(env)
        result = {"steps": st["step"], "epochs": st["epoch"], "best_dev_f1": st["best_f1"],
                  "early_stopped": bool(stop and st["step"] < total), "wall_s": round(time.time() - t_stage, 3)}
        # peak memory of this stage (this process; since a resume when the stage was resumed)
        if env.device.type == "cuda":
            result["peak_gpu_mem_mb"] = round(torch.cuda.max_memory_allocated(env.device) / 2**20, 1)
        else:
            import resource

            # ru_maxrss: the process's peak so far (KiB on Linux), not this stage's alone
            result["process_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        return result


def length_bucketed(perm: List[int], lengths: List[int], bs: int, buckets: int,
                    gen: torch.Generator) -> List[List[int]]:
    """--length-buckets K: the batches of the epoch permutation ``perm`` when each window of K·bs of its
    positions is sorted by length (stable) before it is cut into batches of ``bs``; the batch order is
    then shuffled with ``gen`` (the epoch's generator, so that a resume sees the same batches)."""
    w = bs * buckets
    order = [i for k in range(0, len(perm), w) for i in sorted(perm[k : k + w], key=lambda i: lengths[i])]
    batches = [order[k : k + bs] for k in range(0, len(order), bs)]
    return [batches[i] for i in torch.randperm(len(batches), generator=gen).tolist()]


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def hash_stage(stage: str) -> int:
    """A stable small integer per stage name (Python's hash() is salted per process)."""
    return sum((i + 1) * ord(c) for i, c in enumerate(stage))


def stage_seed(seed: int, stage: str) -> int:
    """The seed of a stage's random stream (distinct from its data-order generators' seeds)."""
    return seed * 1_000_003 + hash_stage("rng/" + stage) * 7919


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
          reuse_from: Optional[str] = None) -> Dict[str, Any]:
    """Train as configured; returns the summary also written to ``<output_dir>/results.json``.
    ``overwrite`` clears an existing run folder (only what mclner wrote) once everything is validated;
    ``reuse_from`` starts with the finished stages of that run that this run's options cannot change
    (mclner/training/reuse.py)."""
    return Trainer(cfg, resume=resume, overwrite=overwrite, reuse_from=reuse_from).run()
