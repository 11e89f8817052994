"""The run's record of itself: ``training_args.json`` (every option as resolved, the method's too),
which options ``--resume`` may change, and the comparison that refuses a resume with other options."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mclner.errors import UserError
from mclner.ops.impl import check_impl, choose_impl
from mclner.training.config import recorded_impl
from mclner.training.reuse import option_diff, plan_reuse
from mclner.training.rundir import read_run_record, write_run_record

# Options that do not change what a run trains: --resume may change them.
RESUME_FREE = ("output_dir", "impl", "fused", "device", "log_every", "progress", "save_every", "stop_after_steps",
               "method_options")


def run_args(cfg: Any, method: Any) -> Dict[str, Any]:
    """What ``training_args.json`` and every checkpoint record: the run's options, and ``method_config``,
    the method's options as resolved (defaults included), so that a later change of a default neither
    changes a resumed run nor the command `mclner report` rebuilds."""
    return {**cfg.to_dict(), "method_config": json.loads(json.dumps(dataclasses.asdict(method.config)))}


def _recorded(run_dir: Path) -> Optional[Dict[str, Any]]:
    """``run_dir/training_args.json`` (None when there is none: the run folder is checked, with its own
    errors, when the run starts); an unreadable record is a UserError, never a skipped check."""
    return read_run_record(run_dir)


def check_resume_args(run_dir: Path, args: Dict[str, Any], method: Any) -> None:
    """--resume continues the recorded run only with the options it was trained with: a UserError that
    names each option that differs (a changed option would silently make another run)."""
    rec = _recorded(run_dir)
    if rec is None:
        return
    diff = option_diff(rec, args, method, RESUME_FREE)
    if diff:
        what = ", ".join(f"{d.flag} {d.new!r} (the run: {d.old!r})" for d in diff)
        raise UserError(f"--resume: {run_dir} was trained with other options: {what}; resume with the run's "
                        "values, or start a new run in another --output-dir")


def run_impl(run_dir: Path) -> Optional[str]:
    """The implementation recorded in ``run_dir/training_args.json`` (None when there is none)."""
    rec = _recorded(run_dir)
    return recorded_impl(rec) if rec is not None else None


def write_run_args(out: Path, cfg: Any, method: Any) -> None:
    out.mkdir(parents=True, exist_ok=True)
    write_run_record(out, run_args(cfg, method))  # atomic: a kill never leaves half a record


def choose_run_impl(cfg: Any, out: Path, resume: bool, device: Any) -> Tuple[str, bool]:
    """(the op implementation of the run, whether it is the resumed run's own). --resume without
    --impl/--fused continues with the implementation the run used (a run from before auto became the
    default: reference), so that its steps are not mixed from two implementations."""
    impl = choose_impl(cfg.impl, cfg.fused)  # default auto; --fused = --impl auto
    kept = run_impl(out) if resume and cfg.impl is None and not cfg.fused else None
    if kept is not None:
        impl = kept
    try:
        check_impl(impl, device)
    except UserError as exc:
        if kept is None:
            raise
        raise UserError(f"{exc} (the run used it; pass --impl to resume with another)") from None
    return impl, kept is not None


def reused_stages(reuse_from: Optional[Path], out: Path, resume: bool, args: Dict[str, Any], method: Any) -> List[str]:
    """--reuse-stages-from: the stages taken from another run (mclner/training/reuse.py)."""
    if reuse_from is None:
        return []
    if resume:
        raise UserError("--reuse-stages-from starts a new run; it cannot be combined with --resume")
    if reuse_from.resolve() == out.resolve():
        raise UserError(f"--reuse-stages-from {reuse_from} is the --output-dir itself")
    return plan_reuse(reuse_from, args, method, RESUME_FREE)
