"""The training engine behind `mclner train`: it runs the stages a method declares and knows no method.

Per stage: the student starts from the previous stage's best model (and, when the stage asks for it,
a frozen copy of that model is the teacher); the method prepares the stage's target data; :meth:`fit`
loops over a :class:`TrainState` with :func:`train_step` (`mclner.training.step`) and an
evaluate-and-select step (best checkpoint, early stopping), and its callbacks (progress, the step
log, resumable checkpoints; `mclner.training.callbacks`) hang off the loop. Each stage writes
``stages/<stage>/last`` (resumable) and ``stages/<stage>/best``; the final model is copied to
``<output_dir>/best``.

Exact resume: the data order of an epoch is a permutation drawn from a generator seeded by
(seed, stage, epoch) (`mclner.training.batching`); every stage after the first starts its random
stream from a seed of (seed, stage), so that a resume at a stage boundary, or a stage reused from
another run, changes nothing; resumable checkpoints are written only between optimizer steps, and they
hold the optimizer, scheduler, grad scaler, the position in the epoch and every RNG state of every rank
(each DDP process draws its own dropout masks).
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from mclner.errors import UserError
from mclner.evaluation import evaluate, format_scores
from mclner.methods.base import Context, Stage
from mclner.ops.impl import selected_impls
from mclner.store.atomic import write_json_atomic
from mclner.training.batching import EpochPlan
from mclner.training.build import build_model, make_optimizer, make_scheduler
from mclner.training.callbacks import Callback, CallbackList, Checkpoints, Progress, StepLog
from mclner.training.checkpoint import (
    checkpoint_exists,
    copy_checkpoint,
    load_weights,
    read_done,
    save_checkpoint,
    update_model_config,
    write_done,
)
from mclner.training.config import TrainConfig
from mclner.training.dist import (
    barrier,
    broadcast_flag,
    broadcast_object,
    gather_rng,
    peak_memory,
    restore_rng,
    seed_everything,
    setup_env,
    stage_seed,
)
from mclner.training.guards import NonFiniteGuard
from mclner.training.logs import RunLog, banner, method_log, where
from mclner.training.model_card import refresh_model_card
from mclner.training.records import check_resume_args, choose_run_impl, reused_stages, run_args, write_run_args
from mclner.training.reuse import link_stages
from mclner.training.rundata import Data, load_data
from mclner.training.rundir import RunDir
from mclner.training.state import StageRun
from mclner.training.state_codec import has_training_state, load_training_state, restore_training_state
from mclner.training.step import StepModule, StepSetup, autocast, train_step


class Trainer:
    """Trains ``cfg`` (see :func:`train`); ``callbacks`` are added to the loop's own (progress, log,
    checkpoints), e.g. `mclner.training.callbacks.StepTimes`."""

    def __init__(self, cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
                 reuse_from: Optional[str] = None, callbacks: Optional[List[Callback]] = None) -> None:
        cfg.validate()
        self.method = cfg.method_instance()
        self.resume, self.overwrite = resume, overwrite
        self.env = setup_env(cfg)
        self.out = Path(cfg.output_dir)
        self.impl, self.impl_kept = choose_run_impl(cfg, self.out, resume, self.env.device)
        # training_args.json and every checkpoint record the implementation the run uses
        self.cfg = replace(cfg, impl=self.impl)
        if resume:
            check_resume_args(self.out, run_args(self.cfg, self.method), self.method)
        self.reuse_from = Path(reuse_from) if reuse_from else None
        self.reused = reused_stages(self.reuse_from, self.out, resume, run_args(self.cfg, self.method), self.method)
        self.progress = Progress(cfg.progress)
        self.log = RunLog(self.env.is_main, self.progress.say)
        self.callbacks = CallbackList([StepLog(self.log, cfg.log_every), self.progress,
                                       Checkpoints(self._save_last, cfg.save_every), *(callbacks or [])])
        seed_everything(cfg.seed + self.env.rank)

    @functools.cached_property
    def selected(self) -> Dict[str, str]:
        """What each op runs under ``self.impl`` here, in float32 ({} when that cannot be told)."""
        try:
            return selected_impls(self.impl, self.env.device)
        except Exception:  # only informative (logs and the banner)
            return {}

    # -- the run
    def run(self) -> Dict[str, Any]:
        # checks --output-dir and locks it for the run; nothing in it is deleted before prepare()
        with RunDir(self.out, self.resume, self.overwrite, main=self.env.is_main) as self.rundir:
            try:
                model = self._prepare()
                return self._run_stages(model)
            finally:
                self.log.close()

    def _prepare(self) -> torch.nn.Module:
        """Data, model and collator; then the run folder (cleared with --overwrite), its record and log."""
        cfg, env = self.cfg, self.env
        barrier(env)
        self.data: Data = load_data(cfg, self.method, env.is_main, log=method_log(self.log))
        model, self.tokenizer = build_model(cfg, self.method, self.data.label_map)
        init_report = self.method.init_model(model, self.data.examples, self.data.label_map)
        model.to(env.device)
        self.collator = self.method.make_collator(self.tokenizer, self.data.label_map, cfg.max_length)
        self.rundir.prepare()  # options, data and encoder are valid: --overwrite may clear the folder now
        if env.is_main:
            self.log.open(self.out)
            write_run_args(self.out, cfg, self.method)
            d = self.data
            self.log.log({"event": "data", "method": self.method.name, "train": len(d.train), "dev": len(d.dev),
                          "target_test": len(d.target_test), "target_unlabeled": len(d.target_unlabeled),
                          "types": list(d.label_map.types), "impl": self.impl, "impl_selected": self.selected,
                          "target_segmentation": d.segmentation.to_dict()})
            self.log.flush()  # what the method reported while the data was prepared
            if init_report:
                self.log.log({"event": "init", **init_report})
            for line in banner(cfg, self.method, self.data, self.env, self.impl, self.selected, self.impl_kept,
                               self.out):
                self.progress.say(line)
            if self.reused:
                link_stages(self.reuse_from, self.out, self.reused, run_args(cfg, self.method))
                self.log.log({"event": "reused_stages", "from": str(self.reuse_from), "stages": self.reused,
                              "message": f"reusing the finished stage(s) {', '.join(self.reused)} of "
                                         f"{self.reuse_from}"})
        barrier(env)
        return model

    def _run_stages(self, model: torch.nn.Module) -> Dict[str, Any]:
        summary: Dict[str, Any] = {"method": self.method.name,
                                   "target_segmentation": self.data.segmentation.to_dict(), "stages": {}}
        if self.reused:
            summary["reused_stages"] = {"from": str(self.reuse_from), "stages": self.reused}
        prev_best: Optional[Path] = None
        # what the run trains (e.g. without frozen embeddings); a stage may narrow it (Method.trainable)
        base_trainable = {n: p.requires_grad for n, p in model.named_parameters()}
        stages = self.method.stages()
        for stage in stages:
            sdir = self.out / "stages" / stage.name
            done = read_done(sdir) if (self.resume or stage.name in self.reused) else None
            if done is not None:
                self.method.prepare_stage(model, stage)
                if self._calibrate(model, stage, done) and self.env.is_main:
                    write_done(sdir, done)
            else:
                done = self._train_stage(stage, stage is stages[0], model, prev_best, base_trainable, summary)
                if done.get("interrupted"):
                    summary["interrupted"] = True
                    return summary
            summary["stages"][stage.name] = done
            prev_best = sdir / "best"
        self._finish(model, prev_best, summary)
        return summary

    def _train_stage(self, stage: Stage, first: bool, model: torch.nn.Module, prev_best: Optional[Path],
                     base_trainable: Dict[str, bool], summary: Dict[str, Any]) -> Dict[str, Any]:
        """Set up the stage from the previous one's best, train it, calibrate it; its result."""
        if not first:
            # every later stage draws from its own stream (dropout, sampling), seeded by (seed, stage):
            # the same whether the stage follows its predecessor in one process, a resume at the
            # boundary or stages reused from another run. The first stage continues the stream that
            # initialised the model.
            seed_everything(stage_seed(self.cfg.seed, stage.name) + self.env.rank)
        if prev_best is not None:
            self._load_weights(model, prev_best)
        self.method.prepare_stage(model, stage)
        keep = self.method.trainable(stage)
        for n, p in model.named_parameters():
            p.requires_grad_(base_trainable.get(n, True) and (keep is None or bool(keep(n))))
        teacher, target = None, None
        if stage.teacher:
            teacher = copy.deepcopy(model).eval()
            for p in teacher.parameters():
                p.requires_grad_(False)
        if "target" in stage.streams:
            target, counts = self.method.target_data(stage, teacher, self.data.target_unlabeled, self.collator,
                                                     self.context())
            self.log.log({"event": "target_data", "stage": stage.name, **counts})
            summary.setdefault("target_data", {})[stage.name] = counts
        result = self.fit(stage, model, teacher, target)
        if result.get("interrupted"):
            return result
        self._calibrate(model, stage, result)
        if self.env.is_main:
            write_done(self.out / "stages" / stage.name, result)
        barrier(self.env)
        return result

    def _finish(self, model: torch.nn.Module, best: Optional[Path], summary: Dict[str, Any]) -> None:
        """The final model (the last stage's best) to ``<output_dir>/best``, scored; results.json."""
        self._load_weights(model, best)
        if self.env.is_main:
            copy_checkpoint(best, self.out / "best")
            summary["final"] = self._final_eval(model)
            write_json_atomic(self.out / "results.json", summary)
            refresh_model_card(self.out / "best", summary["final"])  # the card shows the final scores
            for line in where(self.out):
                self.progress.say(line)

    def context(self) -> Context:
        return Context(self.cfg, self.env.device, self.impl, self.data.label_map, self.env.is_main,
                       method_log(self.log), segmentation=self.data.segmentation)

    # -- one stage
    def fit(self, stage: Stage, model: torch.nn.Module, teacher: Optional[torch.nn.Module] = None,
            target: Optional[List[Any]] = None) -> Dict[str, Any]:
        """Train one stage: optimizer steps over its epochs, evaluating and selecting as configured."""
        run = self._begin_stage(stage, model, teacher, target)
        st, plan, cfg = run.state, run.plan, self.cfg
        self.callbacks.on_stage_begin(run)
        run.t0 = time.time()
        while st.step < run.total and not st.stop:
            mine, tperm = plan.epoch(st.epoch)
            while st.batch_pos < len(mine):
                micro = plan.group(mine, tperm, st.batch_pos)
                out = train_step(run.step, micro, st.step + 1)
                st.step, st.batch_pos = st.step + 1, st.batch_pos + len(micro)
                self.callbacks.on_step_end(run, out)
                if run.eval_due():
                    st.stop = self.evaluate_and_select(run)
                if cfg.stop_after_steps and st.step >= cfg.stop_after_steps:
                    run.interrupted = True
                    self.callbacks.on_stage_end(run)
                    return {"interrupted": True, "step": st.step}
                if st.stop or st.step >= run.total:
                    break
            else:  # the epoch ran out
                st.epoch, st.batch_pos = st.epoch + 1, 0
                if not cfg.eval_every:
                    st.stop = self.evaluate_and_select(run)
        if st.last_eval_step != st.step:
            self.evaluate_and_select(run)
        self.callbacks.on_stage_end(run)
        return self._end_stage(run)

    def _begin_stage(self, stage: Stage, model: torch.nn.Module, teacher: Optional[torch.nn.Module],
                     target: Optional[List[Any]]) -> StageRun:
        """The stage's plan of batches, optimizer, schedule and step set-up; its state from the
        resumable checkpoint when the run is resumed inside it."""
        cfg, env = self.cfg, self.env
        plan = EpochPlan(stage, self.data.examples, target, cfg, env.rank, env.world)
        if not plan.items:
            raise UserError(f"stage {stage.name}: no {'training examples' if plan.from_source else 'target sentences'}")
        t_stage = time.time()
        if env.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(env.device)
        opt = make_optimizer(model, cfg)
        # --head-warmup-steps: only the run's first stage starts from fresh heads
        first = stage.name == self.method.stages()[0].name
        sched = make_scheduler(opt, plan.total, cfg.warmup_ratio, cfg.head_warmup_steps if first else 0)
        use_scaler = cfg.amp and env.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        step_module = StepModule(model, self.method, zero_term=env.distributed)
        setup = StepSetup(model, self.method, stage, self.collator, opt, sched, env.device, self.impl, step_module,
                          teacher=teacher, scaler=torch.amp.GradScaler("cuda", enabled=use_scaler),
                          amp=autocast(cfg.amp, env.device), max_grad_norm=cfg.max_grad_norm,
                          guard=NonFiniteGuard(stage=stage.name, device=env.device))  # stops after 3 in a row
        run = StageRun(stage, self.out / "stages" / stage.name, plan, setup, env.is_main, cfg.eval_every,
                       t_stage=t_stage)
        last = run.sdir / "last"
        if self.resume and has_training_state(last):
            self._load_weights(model, last)
            ts = load_training_state(last)  # JSON + safetensors, verified; never unpickles
            counters = run.state.counters()  # checked: an edited state is a one-line error, not a traceback
            restore_training_state(last, ts, model, opt, sched, setup.scaler, counters)
            run.state.load(counters)
            restore_rng(env, ts)  # every rank its own RNG state, as it was at the save
            if env.is_main:
                self.progress.say(f"[{stage.name}] resumed from {last} at step {run.state.step}")
        if env.distributed:
            from torch.nn.parallel import DistributedDataParallel

            setup.ddp = DistributedDataParallel(step_module,
                                                device_ids=[env.device.index] if env.device.type == "cuda" else None)
        model.train()
        if teacher is not None:
            teacher.to(env.device)
        return run

    def evaluate_and_select(self, run: StageRun) -> bool:
        """Evaluate on the dev set (main process), keep the best model (or the last, for a stage that
        does not select), then the callbacks save a resumable checkpoint; True = stop early (patience)."""
        st, env = run.state, self.env
        st.last_eval_step = st.step  # on every rank: they all take the same branches after
        stop = False
        if env.is_main and self.data.dev:
            model = run.step.model
            record, res = self._dev_record(run, model)
            improved = record["dev_f1"] > st.best_f1 or not run.stage.select_best
            if improved:
                st.best_f1, st.bad_evals = record["dev_f1"], 0
                self._save(run.sdir / "best", model, extra={"stage": run.name, "step": st.step, "dev": res})
            else:
                st.bad_evals += 1
            self.callbacks.on_evaluate(run, record, improved)
            stop = self.cfg.patience > 0 and st.bad_evals >= self.cfg.patience
        self.callbacks.on_evaluated(run)
        stop = broadcast_flag(env, stop)
        barrier(env)
        return stop

    def _dev_record(self, run: StageRun, model: torch.nn.Module) -> Tuple[Dict[str, Any], Dict[str, Any]]:
        """The eval record of the log (and the scores): dev P/R/F1 with the model's own decoding and,
        when that is a calibrated one, the plain argmax F1 beside it."""
        st = run.state
        res = self._evaluate(model, self.data.dev)
        record = {"event": "eval", "stage": run.name, "step": st.step, "epoch": st.epoch, "dev_f1": res["f1"],
                  "dev_precision": res["precision"], "dev_recall": res["recall"]}
        plain = model.argmax_decoding()
        if plain is not None:
            record["dev_f1_argmax"] = self._evaluate(model, self.data.dev, **plain)["f1"]
            record["decoding"] = model.describe_decoding()
        return record, res

    def _save_last(self, run: StageRun) -> None:
        """The resumable checkpoint ``stages/<stage>/last`` (a collective: every rank's RNG state)."""
        rngs = gather_rng(self.env)
        if not self.env.is_main:
            return
        s = run.step
        state = {"optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict(),
                 "scaler": s.scaler.state_dict(), "counters": run.state.counters(), "rng": rngs[0],
                 "rng_ranks": rngs, "stage": run.name, "total_steps": run.total}
        self._save(run.sdir / "last", s.model, training_state=state, extra={"stage": run.name, "step": run.state.step})

    def _end_stage(self, run: StageRun) -> Dict[str, Any]:
        """The stage's result: steps, epochs, best dev F1, early stop, wall time and peak memory (this
        process; since a resume when the stage was resumed)."""
        st, env = run.state, self.env
        if env.is_main and not checkpoint_exists(run.sdir / "best"):  # no dev set: the last model is the result
            self._save(run.sdir / "best", run.step.model, extra={"stage": run.name, "step": st.step})
        barrier(env)
        return {"steps": st.step, "epochs": st.epoch, "best_dev_f1": st.best_f1,
                "early_stopped": bool(st.stop and st.step < run.total), "wall_s": round(time.time() - run.t_stage, 3),
                **peak_memory(env.device)}

    # -- decoding settings, weights, scores
    def _calibrate(self, model: torch.nn.Module, stage: Stage, result: Dict[str, Any]) -> bool:
        """Let the method choose decoding settings for the stage's best model on the source dev set
        (once; kept in ``result`` and the stage's best checkpoint) and set them on ``model``, so that
        the next stage's teacher and the final model decode with them. True when computed now."""
        env = self.env
        fields = result.get("calibrated")
        computed = fields is None
        if computed:
            if not (self.method.calibrates(stage) and self.data.dev):
                return False
            best = self.out / "stages" / stage.name / "best"
            self._load_weights(model, best)
            found = self.method.calibrate(model, stage, self.data.dev, self.collator, self.context()) \
                if env.is_main else None
            # every rank takes rank 0's choice
            found = broadcast_object(env, found or None)
            if not found:
                return False
            fields = dict(found["model"])
            result["calibrated"] = fields
            result.update(fields)
            if env.is_main:
                result.update({k: v for k, v in found.items() if k not in ("model", "message")})
                update_model_config(best, **fields)
                self.log.log({"event": "calibration", "stage": stage.name, **fields,
                              **({"message": f"[{stage.name}] {found['message']}"} if found.get("message") else {})})
        for k, v in fields.items():
            setattr(model.config, k, v)
        return computed

    def _load_weights(self, model: torch.nn.Module, path: Optional[Path]) -> None:
        if path is not None:
            load_weights(model, path, self.env.device)  # verifies the SHA-256 recorded at save

    def _save(self, dest: Path, model: torch.nn.Module, **kw: Any) -> None:
        from mclner.data.segmenters import text_record

        text = text_record(self.data.segmentation.mode, self.cfg.target_lang, self.cfg.target_segmenter)
        save_checkpoint(dest, model, self.tokenizer, self.data.label_map, run_args(self.cfg, self.method),
                        method=self.method, text=text, **kw)

    def _evaluate(self, model: torch.nn.Module, sentences: List[Any], **decode_options: Any) -> Dict[str, Any]:
        return evaluate(model, sentences, self.collator, self.data.label_map, batch_size=2 * self.cfg.batch_size,
                        device=self.env.device, impl=self.impl, **decode_options)

    def _final_eval(self, model: torch.nn.Module) -> Dict[str, Any]:
        res: Dict[str, Any] = {}
        if self.data.dev:
            res["source_dev"] = self._evaluate(model, self.data.dev)
        if self.data.target_test:
            res["target_test"] = self._evaluate(model, self.data.target_test)
            self.progress.say(f"target test ({self.cfg.target}):\n{format_scores(res['target_test'])}")
        self.log.log({"event": "final", **{k: v["f1"] for k, v in res.items()}})
        return res


def train(cfg: TrainConfig, resume: bool = False, overwrite: bool = False,
          reuse_from: Optional[str] = None) -> Dict[str, Any]:
    """Train as configured; returns the summary also written to ``<output_dir>/results.json``.
    ``overwrite`` clears an existing run folder (only what mclner wrote) once everything is validated;
    ``reuse_from`` starts with the finished stages of that run that this run's options cannot change
    (mclner/training/reuse.py)."""
    return Trainer(cfg, resume=resume, overwrite=overwrite, reuse_from=reuse_from).run()
