"""How long training runs will take, before they run.

For each row (a set of `mclner train` options): the planned optimizer steps of every stage, from the
preset, the options and the data sizes (the trainer's own formula, :func:`stage_steps`, no training);
the seconds per optimizer step of each stage, measured by a short probe of the same run on this device
(``--probe-steps`` steps per stage on a subset, into a temporary folder); and the inference passes the
run makes (dev evaluations, calibration, pseudo-labelling, the final scoring), timed per sentence on
the probe's model. `scripts/experiments.sh` calls it when ``MCLNER_ESTIMATE=1``::

    python -m mclner.training.estimate --preset full --seed 13 \\
        --row tc 3 "--method token-classification" --row mclner 3 "--method mclner" [--json FILE]

Early stopping (``--patience``) can only shorten a run; start-up (reading the data, code-switching,
loading the encoder, about a minute) is not counted.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from mclner.errors import UserError


@dataclass
class StagePlan:
    name: str
    steps: int
    steps_per_epoch: int
    evaluations: int  # dev evaluations (each epoch or --eval-every, and the stage's last step)
    pseudo_labelled: int  # target sentences the method labels before the stage (e.g. self-training)
    seconds_per_step: Optional[float] = None


@dataclass
class RowPlan:
    row: str
    runs: int
    options: str
    stages: List[StagePlan]
    sizes: Dict[str, int]
    source_inference: int  # source dev sentences predicted over the run
    target_inference: int  # target sentences predicted over the run
    seconds_per_sentence: Dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def train_s(self) -> float:
        return sum(s.steps * (s.seconds_per_step or 0.0) for s in self.stages)

    @property
    def inference_s(self) -> float:
        sps = self.seconds_per_sentence
        return self.source_inference * sps.get("source", 0.0) + self.target_inference * sps.get("target", 0.0)

    @property
    def run_s(self) -> float:
        return self.train_s + self.inference_s

    def to_dict(self) -> Dict[str, Any]:
        return {"row": self.row, "runs": self.runs, "options": self.options, "sizes": self.sizes,
                "stages": [vars(s) for s in self.stages], "source_inference": self.source_inference,
                "target_inference": self.target_inference, "seconds_per_sentence": self.seconds_per_sentence,
                "train_s": self.train_s, "inference_s": self.inference_s, "run_s": self.run_s,
                "all_runs_s": self.runs * self.run_s, "note": self.note}


def train_config(preset: Optional[str], seed: int, options: str, output_dir: str) -> Any:
    """The TrainConfig that ``mclner train --preset P --seed S OPTIONS`` would run (the real parser)."""
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    argv = ["train", "--seed", str(seed), "--output-dir", output_dir, "--no-progress"]
    argv += ["--preset", preset] if preset else []
    try:
        args = build_parser().parse_args(argv + shlex.split(options))
    except SystemExit:
        raise UserError(f"mclner train does not accept the options {options!r}") from None
    return config_from_args(args)


def plan_row(cfg: Any, row: str = "", runs: int = 1, options: str = "", extra_target_evals: int = 0) -> RowPlan:
    """The steps and inference passes of one run of ``cfg``, from the data sizes (nothing trains).
    ``extra_target_evals``: whole-target-test scorings after training (experiments.sh makes two)."""
    from mclner.methods.base import Method
    from mclner.training.batching import stage_steps
    from mclner.training.rundata import read_sentences

    method = cfg.method_instance()
    r = read_sentences(cfg, method)
    labels_target = type(method).target_data is not Method.target_data  # e.g. pseudo-labelling
    stages = []
    for st in method.stages():
        n = len(r.train) if "source" in st.streams else len(r.target_unlabeled)
        steps, spe = stage_steps(st, cfg, n)
        evals = math.ceil(steps / (cfg.eval_every or spe)) if r.dev else 0
        pl = len(r.target_unlabeled) if labels_target and "target" in st.streams else 0
        stages.append(StagePlan(st.name, steps, spe, evals, pl))
    calib = sum(len(r.dev) for st in method.stages() if method.calibrates(st))
    src_inf = sum(s.evaluations for s in stages) * len(r.dev) + calib + len(r.dev)
    tgt_inf = sum(s.pseudo_labelled for s in stages) + len(r.target_test) + extra_target_evals * len(r.target_test_all)
    sizes = {"source_train": len(r.train), "source_dev": len(r.dev), "target_test": len(r.target_test_all),
             "target_unlabeled": len(r.target_unlabeled)}
    return RowPlan(row or cfg.method, runs, options, stages, sizes, src_inf, tgt_inf)


def _probe_config(cfg: Any, steps: int, out: Path, eval_sentences: int) -> Any:
    """``cfg`` cut down to ``steps`` optimizer steps per stage on a subset large enough that no epoch
    ends (an epoch end would evaluate inside the timed steps)."""
    p = copy.deepcopy(cfg)
    need = 2 * (steps + 1) * cfg.effective_batch_size
    p.output_dir, p.max_steps, p.eval_every, p.save_every = str(out), steps, None, None
    p.patience, p.progress, p.log_every, p.stop_after_steps = 0, False, 1, None
    p.max_train_sentences = min(cfg.max_train_sentences or need, need)
    p.max_unlabeled_sentences = min(cfg.max_unlabeled_sentences or need, need)
    p.max_eval_sentences = min(cfg.max_eval_sentences or eval_sentences, eval_sentences)
    method = cfg.method_instance()
    for name in list(vars(method.config)):
        if name.endswith("max_steps"):  # per-stage budgets of the method (st_max_steps, kd_max_steps, ...)
            p.method_options[name] = steps
    return p


def _step_seconds(times: Dict[str, List[float]]) -> Dict[str, float]:
    """Median seconds per optimizer step of each stage (the first step, with its one-off warm-up such
    as kernel compilation, is left out)."""
    return {stage: statistics.median(t[1:] if len(t) > 1 else t) for stage, t in times.items() if t}


def _inference_seconds(ckpt: Path, sentences: Sequence[Any], device: Any, impl: str, batch_size: int) -> float:
    """Seconds per sentence of predicting ``sentences`` with the checkpoint (after one warm-up batch)."""
    from mclner.evaluation import predict_entities
    from mclner.inference import load_model

    if not sentences:
        return 0.0
    lm = load_model(ckpt, device)
    warm = list(sentences[:batch_size])
    predict_entities(lm.model, warm, lm.collator, lm.label_map, batch_size=batch_size, device=lm.device, impl=impl)
    if lm.device.type == "cuda":
        import torch

        torch.cuda.synchronize(lm.device)
    t = time.perf_counter()
    predict_entities(lm.model, list(sentences), lm.collator, lm.label_map, batch_size=batch_size, device=lm.device,
                     impl=impl)
    if lm.device.type == "cuda":
        import torch

        torch.cuda.synchronize(lm.device)
    return (time.perf_counter() - t) / len(sentences)


def probe_row(plan: RowPlan, cfg: Any, steps: int = 8, eval_sentences: int = 128) -> RowPlan:
    """Measure the seconds per step of each stage (``steps`` steps each) and per predicted sentence on
    this device, into a temporary folder that is deleted after; fills them into ``plan``."""
    from mclner.methods.base import Method
    from mclner.training.callbacks import StepTimes
    from mclner.training.rundata import read_sentences
    from mclner.training.trainer import Trainer

    if steps < 2:
        raise UserError("the probe needs at least 2 steps per stage (the first one is not timed)")
    with tempfile.TemporaryDirectory(prefix="mclner-probe-") as tmp:
        out = Path(tmp) / "run"
        pcfg = _probe_config(cfg, steps, out, eval_sentences)
        times = StepTimes()  # the trainer's own steps (mclner.training.step.train_step), timed
        trainer = Trainer(pcfg, callbacks=[times])
        method = trainer.method
        notes = []
        if type(method).target_data is not Method.target_data:
            original = method.target_data

            def target_data(stage, teacher, sentences, collator, ctx):  # type: ignore[no-untyped-def]
                kept, counts = original(stage, teacher, sentences, collator, ctx)
                if not kept and sentences:
                    # a probe's few-step teacher labels nothing confidently: time the stage on the
                    # sentences with all-O labels instead (a step's cost does not depend on the labels)
                    kept = [type(s)(list(s.tokens), ["O"] * len(s.tokens), getattr(s, "lang", None))
                            for s in sentences]
                    notes.append(f"{stage.name}: probe timed on all-O target sentences")
                return kept, counts

            method.target_data = target_data  # type: ignore[method-assign]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the probe's progress; stdout is the table
                trainer.run()
        except RuntimeError as exc:  # e.g. CUDA out of memory: say so in the table, estimate the other rows
            plan.note = f"probe failed: {str(exc).splitlines()[0][:200]}"
            return plan
        secs = _step_seconds(times.seconds)
        for s in plan.stages:
            s.seconds_per_step = secs.get(s.name)
        r = read_sentences(pcfg, method)
        bs = 2 * cfg.batch_size  # the trainer evaluates with twice the training batch
        device, impl = trainer.env.device, trainer.impl
        plan.seconds_per_sentence = {
            "source": _inference_seconds(out / "best", r.dev[:eval_sentences], device, impl, bs),
            "target": _inference_seconds(out / "best", r.target_test_all[:eval_sentences], device, impl, bs),
        }
        plan.note = "; ".join(notes)
    return plan


def _hours(s: float) -> str:
    return f"{s / 3600:.2f} h"


def format_table(plans: Sequence[RowPlan], device: str = "", probe_steps: int = 0) -> str:
    lines = ["| row | runs | stages: planned steps × s/step | train | inference | one run | all runs |",
             "|---|---:|---|---:|---:|---:|---:|"]
    def hours(p: RowPlan, s: float) -> str:
        return _hours(s) if all(x.seconds_per_step is not None for x in p.stages) else "?"

    for p in plans:
        st = ", ".join(f"{s.name} {s.steps:,} × {s.seconds_per_step:.3f}" if s.seconds_per_step is not None
                       else f"{s.name} {s.steps:,} × ?" for s in p.stages)
        lines.append(f"| {p.row} | {p.runs} | {st} | {hours(p, p.train_s)} | {hours(p, p.inference_s)} | "
                     f"{hours(p, p.run_s)} | {hours(p, p.runs * p.run_s)} |")
    total = sum(p.runs * p.run_s for p in plans)
    known = all(s.seconds_per_step is not None for p in plans for s in p.stages)
    lines.append(f"| **total** | {sum(p.runs for p in plans)} | | | | | **{_hours(total) if known else '?'}** |")
    if device:
        lines.append("")
        lines.append(f"Seconds per step: median of {probe_steps} probe steps per stage on {device} (the first "
                     "left out); inference: seconds per sentence on the probe's model. Early stopping can only "
                     "shorten a run; start-up (data, code-switching, encoder) is not counted.")
    for p in plans:
        if p.note:
            lines.append(f"- {p.row}: {p.note}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m mclner.training.estimate",
        description="Estimate the time of `mclner train` rows: planned steps per stage from the preset and the "
                    "data sizes, seconds per step from a short probe of each row on this device.")
    ap.add_argument("--preset", default=None, help="the rows' preset (quick, full)")
    ap.add_argument("--seed", type=int, default=42, help="seed of the probe and of the data subsets")
    ap.add_argument("--row", nargs=3, action="append", metavar=("NAME", "RUNS", "OPTIONS"), required=True,
                    help="a row: its name, how many runs (seeds) it has, and its `mclner train` options as one "
                         "quoted string")
    ap.add_argument("--probe-steps", type=int, default=8, help="optimizer steps per stage of each probe")
    ap.add_argument("--no-probe", action="store_true", help="only the planned steps (no timing)")
    ap.add_argument("--extra-target-evals", type=int, default=0,
                    help="whole-target-test scorings after each run (scripts/experiments.sh: 2)")
    ap.add_argument("--json", default=None, help="also write the estimate as JSON here")
    args = ap.parse_args(argv)
    plans = []
    device = ""
    try:
        if args.probe_steps < 2:
            raise UserError("--probe-steps must be at least 2 (the first step of a stage is not timed)")
        for name, runs, options in args.row:
            if not runs.isdigit() or int(runs) < 1:
                raise UserError(f"--row {name}: RUNS must be a positive integer, got {runs!r}")
            with tempfile.TemporaryDirectory(prefix="mclner-plan-") as tmp:
                cfg = train_config(args.preset, args.seed, options, str(Path(tmp) / "run"))
            plan = plan_row(cfg, name, int(runs), options, args.extra_target_evals)
            if not args.no_probe:
                t = time.time()
                probe_row(plan, cfg, args.probe_steps)
                device = cfg.device or ("cuda" if _cuda() else "cpu")
                print(f"[estimate] {name}: probed in {time.time() - t:.0f} s", file=sys.stderr, flush=True)
            plans.append(plan)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(plans, device, 0 if args.no_probe else args.probe_steps))
    if args.json:
        Path(args.json).write_text(json.dumps({"preset": args.preset, "device": device,
                                               "probe_steps": args.probe_steps, "rows": [p.to_dict() for p in plans],
                                               "total_s": sum(p.runs * p.run_s for p in plans)}, indent=2))
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
