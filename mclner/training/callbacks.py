"""What hangs off the training loop (the shape of Hugging Face ``TrainerCallback`` / Lightning
callbacks): progress, the step log and the resumable checkpoints. Every process calls every event
in the same order (a checkpoint gathers every process's RNG state); a callback that only prints or
writes checks ``run.is_main``."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Dict, List

from mclner.training.logs import RunLog, duration
from mclner.training.state import StageRun
from mclner.training.step import StepOutput


class Callback:
    def on_stage_begin(self, run: StageRun) -> None:
        """Before the first step of a stage (also of a resumed one)."""

    def on_step_end(self, run: StageRun, out: StepOutput) -> None:
        """After each optimizer step (the state counts it already)."""

    def on_evaluate(self, run: StageRun, record: Dict[str, Any], improved: bool) -> None:
        """After a dev evaluation, on the main process (the state holds the new best)."""

    def on_evaluated(self, run: StageRun) -> None:
        """After each evaluation point, on every process (also without a dev set)."""

    def on_stage_end(self, run: StageRun) -> None:
        """After the last step of a stage, or when it is interrupted."""


class CallbackList(Callback):
    def __init__(self, callbacks: List[Callback]) -> None:
        self.callbacks = list(callbacks)

    def on_stage_begin(self, run: StageRun) -> None:
        for c in self.callbacks:
            c.on_stage_begin(run)

    def on_step_end(self, run: StageRun, out: StepOutput) -> None:
        for c in self.callbacks:
            c.on_step_end(run, out)

    def on_evaluate(self, run: StageRun, record: Dict[str, Any], improved: bool) -> None:
        for c in self.callbacks:
            c.on_evaluate(run, record, improved)

    def on_evaluated(self, run: StageRun) -> None:
        for c in self.callbacks:
            c.on_evaluated(run)

    def on_stage_end(self, run: StageRun) -> None:
        for c in self.callbacks:
            c.on_stage_end(run)


class Progress(Callback):
    """A progress bar on a terminal (``--progress``); otherwise a line every ``total/20`` steps (at most
    100) and at least once a minute with the loss terms, the rate and the time left; and the line of
    each evaluation. :meth:`say` prints a line above the bar."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None
        self.every = 1
        self.step0 = 0
        self.last_line = 0.0

    def say(self, msg: str) -> None:
        if self.bar is not None:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def on_stage_begin(self, run: StageRun) -> None:
        if self.enabled and run.is_main and sys.stderr.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.total, initial=run.state.step, desc=run.name, dynamic_ncols=True)
        self.every = max(1, min(100, run.total // 20))
        self.step0, self.last_line = run.state.step, time.time()

    def on_step_end(self, run: StageRun, out: StepOutput) -> None:
        st = run.state
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{out.terms['loss']:.4f}")
        elif run.is_main and (st.step % self.every == 0 or time.time() - self.last_line > 60 or st.step == run.total):
            self.last_line = time.time()
            rate = (st.step - self.step0) / max(1e-9, self.last_line - run.t0)
            eta = (run.total - st.step) / rate if rate > 0 else float("nan")
            terms = " ".join(f"{k} {v:.4f}" for k, v in out.terms.items())
            self.say(f"[{run.name}] step {st.step}/{run.total} {terms} | {rate:.2f} steps/s, {duration(eta)} left")

    def on_evaluate(self, run: StageRun, record: Dict[str, Any], improved: bool) -> None:
        st = run.state
        extra = ""
        if "dev_f1_argmax" in record:  # a calibrated decoding is in use: the plain argmax score beside it
            extra = f" (decoding {record['decoding']}; argmax F1 {100 * record['dev_f1_argmax']:.2f})"
        self.say(f"[{run.name}] step {st.step}/{run.total} dev P {100 * record['dev_precision']:.2f} "
                 f"R {100 * record['dev_recall']:.2f} F1 {100 * record['dev_f1']:.2f}{extra}; best F1 "
                 f"{100 * st.best_f1:.2f}" + (" (new best, saved)" if improved else
                                              f" ({st.bad_evals} without improvement)"))

    def on_stage_end(self, run: StageRun) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar = None


class StepLog(Callback):
    """log.jsonl: every ``--log-every`` optimizer steps the loss terms, the method's statistics, the
    gradient norm, the learning rates and the elapsed time; every evaluation."""

    def __init__(self, log: RunLog, every: int) -> None:
        self.log = log
        self.every = every

    def on_step_end(self, run: StageRun, out: StepOutput) -> None:
        st = run.state
        if st.step % self.every == 0:
            lrs = {f"lr_{g['name']}": g["lr"] for g in run.step.optimizer.param_groups}
            self.log.log({"stage": run.name, "step": st.step, "epoch": st.epoch, **out.terms, **out.stats,
                          "grad_norm": out.grad_norm, **lrs, "elapsed_s": time.time() - run.t0})

    def on_evaluate(self, run: StageRun, record: Dict[str, Any], improved: bool) -> None:
        self.log.log(record)


class Checkpoints(Callback):
    """The resumable checkpoint ``stages/<stage>/last``: after every evaluation, and every
    ``--save-every`` steps in between."""

    def __init__(self, save_last: Callable[[StageRun], None], every: Any) -> None:
        self.save_last = save_last
        self.every = every

    def on_step_end(self, run: StageRun, out: StepOutput) -> None:
        if self.every and run.state.step % self.every == 0 and not run.eval_due():
            self.save_last(run)

    def on_evaluated(self, run: StageRun) -> None:
        self.save_last(run)


class StepTimes(Callback):
    """Seconds of each optimizer step per stage (the time estimate's probe)."""

    def __init__(self) -> None:
        self.seconds: Dict[str, List[float]] = {}
        self._t = 0.0

    def on_stage_begin(self, run: StageRun) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, run: StageRun, out: StepOutput) -> None:
        now = time.perf_counter()
        self.seconds.setdefault(run.name, []).append(now - self._t)
        self._t = now

    def on_evaluated(self, run: StageRun) -> None:
        self._t = time.perf_counter()  # an evaluation is not a step's time
