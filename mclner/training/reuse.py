"""``mclner train --reuse-stages-from RUN``: a new run that starts with another run's finished stages.

An ablation that changes an option read only by a late stage (DLBri's ``--no-lp`` is read first by
``students``) would retrain the earlier stages bit for bit. Instead those stages are taken from a run
that differs only in such options: its stage folders are hard-linked (copied where links cannot be
made) into the new run, which then continues as a resumed run does at a stage boundary. Resume at a
stage boundary is exact, so the result equals training from scratch (tests/engine/test_reuse_stages.py).

Which stages may be taken: every common training option that matters (all but those ``--resume`` may
change) must be equal, and stage S is taken only when each method option that differs is first read
by a stage after S (:meth:`mclner.methods.base.Method.late_options`; an option not named there counts
as read from the first stage on), S is finished in RUN, and both runs have the same stages up to S.

Nothing is taken on trust: RUN's record must name every option that matters (a record without them
cannot say what its stages read), the checkpoints of a taken stage must record (under their
checksums) the same options as RUN's ``training_args.json``, and a taken stage must hold no
symbolic link that leads out of it or loops; the stage is copied without following links.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, List, NamedTuple

from mclner.errors import UserError
from mclner.store.checksums import replace_recorded_file
from mclner.store.links import link_or_copy
from mclner.training.checkpoint import read_done


class OptionDiff(NamedTuple):
    name: str  # field name (TrainConfig or the method's Config)
    flag: str  # command-line flag
    old: Any  # the recorded run's value
    new: Any  # this run's value
    method_option: bool


def option_diff(rec: Dict[str, Any], now: Dict[str, Any], method: Any, free: tuple) -> List[OptionDiff]:
    """The options in which ``now`` (run_args of this run) differs from ``rec`` (a run's recorded
    training_args.json), ignoring the common options named in ``free``. Method options are compared
    when both runs use the same method: the recorded ``method_config`` (resolved, defaults included),
    or for a run recorded before it existed, its explicitly given ``method_options``. A method option the
    record lacks counts as its default (the run predates the option, and a new option's default keeps
    the behaviour from before it), or as its ``before`` value when the default changed later."""
    from mclner.methods.base import option_flag
    from mclner.training.config import TrainConfig

    now = json.loads(json.dumps(now))  # as the record has it (tuples as lists)
    common = {f.name: f for f in dataclasses.fields(TrainConfig) if f.name not in free}
    out = [OptionDiff(k, option_flag(common[k]), rec[k], now[k], False) for k in common
           if k in rec and k in now and rec[k] != now[k]]
    if rec.get("method") == now.get("method"):
        own = {f.name: f for f in dataclasses.fields(method.config)}
        was = rec.get("method_config")
        defaults = json.loads(json.dumps(dataclasses.asdict(method.Config())))  # as a record holds them
        # an option whose default changed after it was added: older runs did what it says in `before`
        defaults.update({k: f.metadata["before"] for k, f in own.items() if "before" in f.metadata})
        was = {**defaults, **(was if isinstance(was, dict) else rec.get("method_options") or {})}
        out += [OptionDiff(k, option_flag(own[k]), v, now["method_config"][k], True) for k, v in was.items()
                if k in own and k in now["method_config"] and v != now["method_config"][k]]
    return out


def _describe(diff: List[OptionDiff]) -> str:
    return ", ".join(f"{d.flag} {d.new!r} (the run: {d.old!r})" for d in diff)


def plan_reuse(run_dir: Path, now: Dict[str, Any], method: Any, free: tuple) -> List[str]:
    """The stages of this run (in order) that can be taken from ``run_dir``; a UserError when none can,
    naming what prevents it."""
    from mclner.methods.base import config_from_dict

    where = f"--reuse-stages-from {run_dir}"
    try:
        rec = json.loads((Path(run_dir) / "training_args.json").read_text(encoding="utf-8"))
    except OSError:
        raise UserError(f"{where}: not an mclner run folder (no readable training_args.json)") from None
    except ValueError as exc:
        raise UserError(f"{where}: training_args.json is not valid JSON ({exc})") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("method_config"), dict):
        raise UserError(f"{where}: the run does not record its resolved method options (trained by an older "
                        "mclner), so what its stages read cannot be told; train the stages again")
    missing = _unrecorded(rec, now, method, free)
    if missing:
        raise UserError(f"{where}: its training_args.json does not record {', '.join(missing)} (written by an older "
                        "mclner, or edited), so what its stages were trained with cannot be told; train the stages "
                        "again")
    diff = option_diff(rec, now, method, free)
    common = [d for d in diff if not d.method_option]
    if common:
        raise UserError(f"{where}: the runs differ in options every stage reads: {_describe(common)}")
    try:
        theirs = [s.name for s in type(method)(config_from_dict(type(method), rec["method_config"])).stages()]
    except Exception as exc:  # a record this version cannot read as options of the method
        raise UserError(f"{where}: its method options cannot be read ({exc})") from None
    late = method.late_options()
    ours = [s.name for s in method.stages()]
    taken: List[str] = []
    for i, name in enumerate(ours):
        read = set(ours[: i + 1])
        blocking = [d for d in diff if late.get(d.name) is None or late[d.name] in read]
        if blocking or theirs[: i + 1] != ours[: i + 1] or read_done(Path(run_dir) / "stages" / name) is None:
            if not taken:
                why = (f"the stage reads options that differ: {_describe(blocking)}" if blocking else
                       "the run has not finished it" if theirs[: i + 1] == ours[: i + 1] else
                       f"the runs' stages differ ({', '.join(theirs)} vs {', '.join(ours)})")
                raise UserError(f"{where}: nothing to reuse: stage {name}: {why}")
            break
        taken.append(name)
    for name in taken:
        _check_stage(Path(run_dir) / "stages" / name, name, rec, method, free, where)
    return taken


def _unrecorded(rec: Dict[str, Any], now: Dict[str, Any], method: Any, free: tuple) -> List[str]:
    """The flags of the options that matter (common ones not in ``free``, the method's own) that the
    record ``rec`` lacks."""
    from mclner.methods.base import option_flag
    from mclner.training.config import TrainConfig

    out = [option_flag(f) for f in dataclasses.fields(TrainConfig) if f.name not in free and f.name in now
           and f.name not in rec]
    if rec.get("method") != now.get("method"):
        return out  # another method: the method itself is the difference (option_diff names it)
    own = rec.get("method_config") if isinstance(rec.get("method_config"), dict) else {}
    return out + [option_flag(f) for f in dataclasses.fields(method.config) if f.name not in own]


def _check_stage(stage: Path, name: str, rec: Dict[str, Any], method: Any, free: tuple, where: str) -> None:
    """A stage is taken only when nothing in it leads out of it (a link to /etc would be copied into
    this run, a loop nests copies without end) and its checkpoints, which record under their checksums
    the options they were trained with, agree with the run's training_args.json."""
    from mclner.inference.checkpoint import checksums_required, read_config
    from mclner.store.checksums import verify_files
    from mclner.store.links import refuse_links_out

    refuse_links_out(stage, f"stage {name} of {where}")
    for ckpt in sorted(p for p in stage.iterdir() if p.is_dir() and (p / "training_args.json").is_file()):
        verify_files(ckpt, ["training_args.json"], checksums_required(read_config(ckpt)))
        try:
            theirs = json.loads((ckpt / "training_args.json").read_text(encoding="utf-8"))
        except ValueError:
            theirs = None
        if not isinstance(theirs, dict):
            raise UserError(f"{where}: {ckpt / 'training_args.json'} is not a JSON object")
        for d in option_diff(theirs, rec, method, free):
            raise UserError(f"{where}: stage {name} was trained with {d.flag} {d.old!r} (as {ckpt} records), but the "
                            f"run's training_args.json says {d.new!r}; the record was changed: train the stages again")


def link_stages(run_dir: Path, out: Path, names: List[str], args: Dict[str, Any]) -> None:
    """Hard-link (or copy) the stage folders ``names`` of ``run_dir`` into ``out/stages``. The
    checkpoints in them get this run's ``args`` as their ``training_args.json`` (and checksums), so
    that a model taken from them records the run it belongs to. Nothing is written through a link
    (a file is unlinked before it is written), so the other run stays as it was; each stage folder is
    assembled under a temporary name and renamed into place, so a kill leaves no half-made stage."""
    dest = Path(out) / "stages"
    dest.mkdir(parents=True, exist_ok=True)
    text = json.dumps(args, indent=2, default=str)
    for name in names:
        tmp = dest / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            # temporaries of an interrupted write (".name.tmp-…") are not part of the stage; links are
            # copied as links, never followed (plan_reuse refused any that leads out)
            shutil.copytree(Path(run_dir) / "stages" / name, tmp, copy_function=link_or_copy,
                            ignore=shutil.ignore_patterns(".*"), symlinks=True)
            for ckpt in sorted(p for p in tmp.iterdir() if (p / "training_args.json").is_file()):
                replace_recorded_file(ckpt, "training_args.json", text)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        target = dest / name
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)

