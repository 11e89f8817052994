"""Where the time of one training step goes: a torch.profiler run of a few optimizer steps of a
method's stage, exactly as the trainer makes them, split into data, teacher, forward parts, backward
parts and optimizer (docs/TRAINING.md, "Where a step's time goes").

    OMP_NUM_THREADS=1 PYTHONPATH=$PWD python scripts/profile_step.py --preset quick --method mclner
    ... --stage st1                                  # the self-training round (teacher + target stream)
    ... --method token-classification                # the baseline
    ... --options "--impl reference" --trace t.json  # any `mclner train` options; a Chrome trace

The run's data and model are built as `mclner train` builds them (the real option parser, the
preset, load_data, build_model, init_model), on a subset just large enough for the steps. Each
step is the trainer's own (`mclner.training.step.train_step` over the micro-batches of the
stage's `EpochPlan`: collate, teacher outputs, the StepModule forward, backward, clipping, AdamW,
schedule; on a GPU autocast as the trainer's AMP, no grad scaler); its top-level parts are the
record_function ranges train_step opens. Forward parts are record_function ranges put around the
model's submodules and the method's loss functions by this script only; each backward autograd
node is charged to the forward part that created it (the profiler's sequence numbers).
The self-training stage is profiled with gold-labelled target test
sentences (of at most --max-words words) in place of the teacher's pseudo-labels: a step's cost
does not depend on the labels, and a fresh teacher labels nothing confidently.

Shares are reported as percent of the profiled steps; the absolute times depend on the machine's
load. The first warm-up step is not timed; the other warm-up steps are timed without the profiler
(its overhead inflates many small ops).
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

import torch
from torch.profiler import ProfilerActivity, profile, record_function

TOP = ("data", "teacher", "forward", "backward", "optimizer")
PREFIX = "part:"


def _wrap(fn: Callable, label: str) -> Callable:
    @functools.wraps(fn)
    def inner(*a: Any, **k: Any) -> Any:
        with record_function(PREFIX + label):
            return fn(*a, **k)

    return inner


def instrument(model: torch.nn.Module, method: Any) -> List[str]:
    """Put record_function ranges around the parts of the model and the method's loss functions (this
    process only); returns the labels."""
    import mclner.nn.encoder as enc_mod
    import mclner.ops as ops_mod

    labels: List[str] = []

    def patch_forward(module: Any, label: str) -> None:
        if module is not None:
            module.forward = _wrap(module.forward, label)
            labels.append(label)

    def patch_attr(obj: Any, name: str, label: str) -> None:
        if hasattr(obj, name):
            setattr(obj, name, _wrap(getattr(obj, name), label))
            labels.append(label)

    words = getattr(model, "words", None)
    if words is not None:
        patch_forward(words, "words: dropout, other")
        patch_forward(words.encoder, "encoder: transformer layers")
        patch_forward(words.encoder.embeddings, "encoder: embeddings")
        patch_forward(words.fusion, "words: fusion (BiLSTM)")
    patch_attr(enc_mod, "pool_words", "words: piece pooling")
    relation = getattr(model, "relation", None)
    if relation is not None:
        patch_forward(relation, "relation head: MLPs, other")
        patch_attr(ops_mod, "biaffine", "relation head: biaffine op")
        patch_attr(ops_mod, "cln_head", "relation head: cln_head op")
        patch_attr(ops_mod, "cln_pair_features_at", "contrastive: L_tc pair features")
    for name in ("proj_a", "proj_b"):
        patch_forward(getattr(model, name, None), "contrastive: projections")
    patch_forward(getattr(model, "head", None), "tag head")
    mod = sys.modules[type(method).__module__]
    for name, label in (("grid_ce", "loss: grid CE"), ("sentence_info_nce", "loss: L_sc"),
                        ("relation_info_nce", "loss: L_tc InfoNCE"), ("sample_relation_pairs", "loss: L_tc sampling"),
                        ("prob_mse", "loss: L_mse"), ("token_ce", "loss: token CE")):
        patch_attr(mod, name, label)
    method.loss = _wrap(method.loss, "loss fn: other")
    labels.append("loss fn: other")
    return labels


def build(args: argparse.Namespace, out_dir: str) -> Dict[str, Any]:
    """The run's config, data, model, collator and stage, as `mclner train` makes them."""
    from mclner.methods.base import Method
    from mclner.ops.impl import choose_impl
    from mclner.training.build import build_model
    from mclner.training.dist import seed_everything, setup_env
    from mclner.training.estimate import train_config
    from mclner.training.rundata import load_data, load_split

    options = f"--method {args.method} " + args.options
    cfg = train_config(args.preset, args.seed, options, out_dir)
    steps = args.warmup + args.steps
    need = steps * cfg.effective_batch_size
    if not args.padding_only:  # the padding count reads the preset's whole training subset
        cfg.max_train_sentences = min(cfg.max_train_sentences or need, need)
    cfg.max_unlabeled_sentences = min(cfg.max_unlabeled_sentences or need, need)
    cfg.max_eval_sentences = 1
    method: Method = cfg.method_instance()
    env = setup_env(cfg)
    seed_everything(cfg.seed)
    data = load_data(cfg, method)
    model, tokenizer = build_model(cfg, method, data.label_map)
    method.init_model(model, data.examples, data.label_map)
    model.to(env.device)
    collator = method.make_collator(tokenizer, data.label_map, cfg.max_length)
    stages = {s.name: s for s in method.stages()}
    if args.stage not in stages:
        raise SystemExit(f"method {args.method} has no stage {args.stage!r} (stages: {', '.join(stages)})")
    stage = stages[args.stage]
    method.prepare_stage(model, stage)
    keep = method.trainable(stage)
    if keep is not None:
        for n, p in model.named_parameters():
            p.requires_grad_(p.requires_grad and bool(keep(n)))
    teacher, target = None, None
    if stage.teacher:
        teacher = copy.deepcopy(model).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    if "target" in stage.streams:
        # gold-labelled target sentences stand in for the pseudo-labels (same shapes, same cost)
        pool = [s for s in load_split(cfg.target, "test", cfg.target_lang) if s.tags is not None
                and 0 < len(s.tokens) <= (cfg.max_words or 10**9)]
        target = pool[: need]
    impl = choose_impl(cfg.impl, cfg.fused)
    return dict(cfg=cfg, method=method, env=env, data=data, model=model, collator=collator, stage=stage,
                teacher=teacher, target=target, impl=impl, bucket=args.bucket or cfg.length_buckets,
                ddp_term=args.ddp_term)


def plan(b: Dict[str, Any], bucket: int) -> Any:
    """The stage's micro-batches as the trainer makes them (one process), with --length-buckets ``bucket``."""
    from mclner.training.batching import EpochPlan

    return EpochPlan(b["stage"], b["data"].examples, b["target"], b["cfg"], length_buckets=bucket)


def _count(pad: Dict[str, float], view: Dict[str, torch.Tensor]) -> None:
    pad["pieces_real"] += float(view["attention_mask"].sum())
    pad["pieces_padded"] += float(view["attention_mask"].numel())
    if "grid_labels" in view:  # relation grids: N x N cells per sentence
        n = view["word_mask"].sum(1).float()
        pad["cells_real"] += float((n * n).sum())
        pad["cells_padded"] += float(view["word_mask"].shape[0] * view["word_mask"].shape[1] ** 2)


def padding(method: Any, collator: Any, stage: Any, p: Any) -> Dict[str, float]:
    """Real and padded encoder pieces and grid cells of one epoch of the plan ``p`` (every view)."""
    pad: Dict[str, float] = defaultdict(float)
    mine, _ = p.epoch(0)
    for pos in range(0, len(mine), p.accum):
        for examples, _ in p.group(mine, [], pos):
            batch = method.collate(collator, examples, None, stage)
            for view in ("src", "cs"):
                v = batch.get(view)
                if isinstance(v, dict) and "word_mask" in v:
                    _count(pad, v)
    return pad


def _padding_line(pad: Dict[str, float]) -> str:
    line = f"padding: {100 * (1 - pad['pieces_real'] / pad['pieces_padded']):.1f}% of the encoder's pieces"
    if pad.get("cells_padded"):
        line += f", {100 * (1 - pad['cells_real'] / pad['cells_padded']):.1f}% of the grid cells"
    return line


def make_steps(b: Dict[str, Any]) -> Tuple[Callable[[int], None], Callable[[int], Dict[str, float]]]:
    """(a function running optimizer step ``k`` with the trainer's `train_step`, one counting the padding
    of what step ``k`` collates)."""
    from mclner.training.build import make_optimizer, make_scheduler
    from mclner.training.step import StepModule, StepSetup, autocast, train_step

    cfg, method, env, model, stage = b["cfg"], b["method"], b["env"], b["model"], b["stage"]
    opt = make_optimizer(model, cfg)
    setup = StepSetup(model, method, stage, b["collator"], opt, make_scheduler(opt, 1000, cfg.warmup_ratio),
                      env.device, b["impl"], StepModule(model, method, zero_term=b["ddp_term"]),
                      teacher=b["teacher"], amp=autocast(cfg.amp, env.device), max_grad_norm=cfg.max_grad_norm)
    p = plan(b, b["bucket"])
    mine, tperm = p.epoch(0)
    model.train()

    def step(k: int) -> None:
        train_step(setup, p.group(mine, tperm, k * p.accum), k + 1)

    def step_padding(k: int) -> Dict[str, float]:
        pad: Dict[str, float] = defaultdict(float)
        for examples, target in p.group(mine, tperm, k * p.accum):
            batch = method.collate(b["collator"], examples, target, stage)
            for view in ("src", "cs", "tgt"):
                v = batch.get(view)
                if isinstance(v, dict) and "word_mask" in v:
                    _count(pad, v)
        return pad

    return step, step_padding


def _nearest_part(ev: Any, parts: set) -> str:
    p = ev.cpu_parent
    while p is not None and p.name not in parts:
        p = p.cpu_parent
    return p.name if p is not None else ""


def _in_teacher(ev: Any) -> bool:
    p = ev.cpu_parent
    while p is not None and p.name != "teacher":
        p = p.cpu_parent
    return p is not None


def shares(prof: Any, labels: List[str]) -> Tuple[Dict[str, float], float]:
    """Milliseconds per row of the table: forward parts (exclusive of nested parts), backward charged to
    the forward part that created each autograd node, and the top-level ranges' remainders (the
    teacher's call is one row: the parts inside it are not split out)."""
    parts = set(TOP) | {PREFIX + lab for lab in set(labels)}
    events = [ev for ev in prof.events() if not _in_teacher(ev)]
    ms: Dict[str, float] = defaultdict(float)
    total = 0.0
    seq_part: Dict[int, str] = {}
    for ev in events:
        dur = ev.time_range.elapsed_us() / 1000.0
        if ev.name in parts:
            parent = _nearest_part(ev, parts)
            if ev.name in TOP:
                total += dur
            ms["fwd " + ev.name[len(PREFIX):] if ev.name.startswith(PREFIX) else ev.name] += dur
            if parent:
                ms["fwd " + parent[len(PREFIX):] if parent.startswith(PREFIX) else parent] -= dur
        elif ev.sequence_nr >= 0 and not ev.name.startswith("autograd::engine") and ev.fwd_thread is not None:
            part = _nearest_part(ev, parts)
            if part and part not in ("backward",) and ev.sequence_nr not in seq_part:
                seq_part[ev.sequence_nr] = part
    for ev in events:
        if not ev.name.startswith("autograd::engine::evaluate_function"):
            continue
        if _nearest_part(ev, parts) != "backward":
            continue
        dur = ev.time_range.elapsed_us() / 1000.0
        part = seq_part.get(ev.sequence_nr, "")
        if "AccumulateGrad" in ev.name:
            row = "bwd accumulate grad"
        elif part.startswith(PREFIX):
            row = "bwd " + part[len(PREFIX):]
        elif part == "forward":
            row = "bwd StepModule (DDP zero term)"
        else:
            row = "bwd other"
        ms[row] += dur
        ms["backward"] -= dur
    if "forward" in ms:
        ms["fwd StepModule (DDP zero term)"] = ms.pop("forward")
    if "backward" in ms:
        ms["bwd engine overhead"] = ms.pop("backward")
    return dict(ms), total


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--method", default="mclner")
    ap.add_argument("--stage", default="source", help="the stage to profile (mclner: source, st1)")
    ap.add_argument("--options", default="", help="more `mclner train` options, one quoted string")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--warmup", type=int, default=3, help="warm-up steps (the first untimed, the rest timed "
                                                          "without the profiler)")
    ap.add_argument("--steps", type=int, default=5, help="profiled optimizer steps")
    ap.add_argument("--bucket", type=int, default=0, metavar="K",
                    help="profile with --length-buckets K (also taken from --options)")
    ap.add_argument("--ddp-term", action="store_true",
                    help="add StepModule's zero term for unused parameters, as under DDP (one process: the trainer "
                         "fills their zero gradients after the backward passes instead)")
    ap.add_argument("--padding-only", action="store_true",
                    help="no steps: count the padding of one epoch of the preset's training subset, with the "
                         "trainer's batches and with --bucket K (default 50)")
    ap.add_argument("--top-ops", type=int, default=15, help="rows of the per-operator table")
    ap.add_argument("--trace", default=None, help="write a Chrome trace of the profiled steps here")
    ap.add_argument("--json", default=None, help="write the numbers as JSON here")
    args = ap.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit("--warmup and --steps must be at least 1")
    with tempfile.TemporaryDirectory(prefix="mclner-profile-") as tmp:
        t = time.perf_counter()
        b = build(args, str(Path(tmp) / "run"))
        print(f"built in {time.perf_counter() - t:.1f} s; impl {b['impl']}; threads {torch.get_num_threads()}; "
              f"device {b['env'].device}", file=sys.stderr)
        if args.padding_only:
            examples, bs = b["data"].examples, b["cfg"].batch_size
            for k in (0, args.bucket or 50):
                pad = padding(b["method"], b["collator"], b["stage"], plan(b, k))
                print(f"{len(examples)} examples, batch {bs}, bucket {k}: {_padding_line(pad)}")
            return 0
        labels = instrument(b["model"], b["method"])
        step, step_padding = make_steps(b)
        cuda = b["env"].device.type == "cuda"

        def sync() -> None:
            if cuda:
                torch.cuda.synchronize()

        plain = []
        for k in range(args.warmup):
            sync()
            t = time.perf_counter()
            step(k)
            sync()
            if k > 0:
                plain.append(time.perf_counter() - t)
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        pad: Dict[str, float] = defaultdict(float)
        t = time.perf_counter()
        with profile(activities=acts) as prof:
            for k in range(args.warmup, args.warmup + args.steps):
                step(k)
            sync()
        profiled = (time.perf_counter() - t) / args.steps
        for k in range(args.warmup, args.warmup + args.steps):  # not timed: collates those batches again
            for key, v in step_padding(k).items():
                pad[key] += v
    if args.trace:
        prof.export_chrome_trace(args.trace)
    ms, total = shares(prof, labels)
    rows = sorted(((k, v) for k, v in ms.items() if abs(v) > 1e-6), key=lambda kv: -kv[1])
    title = f"{args.method} {args.stage} ({args.preset}{' ' + args.options if args.options else ''})"
    print(f"\n{title}: {args.steps} profiled optimizer steps; step {profiled:.2f} s profiled"
          + (f", {statistics.median(plain):.2f} s unprofiled (median of {len(plain)})" if plain else ""))
    print("| part | % of step |\n|---|---:|")
    for k, v in rows:
        print(f"| {k} | {100 * v / total:.1f} |")
    groups: Dict[str, float] = defaultdict(float)
    for k, v in ms.items():
        groups[k.split(" ")[0] if k.startswith(("fwd", "bwd")) else k] += v
    order = sorted(groups.items(), key=lambda kv: -kv[1])
    print("totals: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in order))
    if pad.get("pieces_padded"):
        print(_padding_line(pad))
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.top_ops))
    if args.json:
        Path(args.json).write_text(json.dumps({
            "title": title, "steps": args.steps, "profiled_step_s": profiled,
            "unprofiled_step_s": statistics.median(plain) if plain else None,
            "ms_per_step": {k: v / args.steps for k, v in ms.items()}, "total_ms_per_step": total / args.steps,
            "padding": dict(pad), "threads": torch.get_num_threads(), "impl": b["impl"]}, indent=2))
    return 0 if math.isfinite(total) else 1


if __name__ == "__main__":
    sys.exit(main())
