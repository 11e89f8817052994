"""`mclner train`, `mclner evaluate`, `mclner predict`."""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any, List, Optional

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError
from mclner.training.config import PRESETS, TrainConfig

_D = TrainConfig()


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {v}")
    return v


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v


# ----------------------------------------------------------------------------- train


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train mCL-NER (or the token-classification baseline) and evaluate it on the target",
        description=(
            "Train on labelled source sentences (plus code-switched copies and, with self-training, "
            "pseudo-labelled target sentences), select the best model on the source dev set, then score it "
            "on the target test set. Defaults are the embedded offline setup: CoNLL-2003 English -> MSRA "
            "Chinese, CC-CEDICT, multilingual-e5-small. Run on several processes with "
            "`torchrun --nproc_per_node K -m mclner train ...` (DDP; gloo on CPU, NCCL on GPU)."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    g = p.add_argument_group("data")
    g.add_argument("--source", default=_D.source, help="labelled source data: embedded name, HF dataset or path")
    g.add_argument("--target", default=_D.target,
                   help="target data; its test split is scored after training ('none' to skip)")
    g.add_argument("--target-unlabeled", default=None,
                   help="unlabelled target text for self-training (default: the target's train split, tags ignored)")
    g.add_argument("--target-dev", default=None,
                   help="select the model on this target dev set instead of the source dev set")
    g.add_argument("--target-lang", default=_D.target_lang, help="target language code (code-switching)")
    g.add_argument("--lexicon", default=_D.lexicon, help="bilingual lexicon for code-switching (name or path)")
    g.add_argument("--encoder", default=_D.encoder, help="encoder: embedded name or a Hugging Face folder")
    g.add_argument("--output-dir", default=_D.output_dir, help="where checkpoints, logs and results go")
    g.add_argument("--max-train-sentences", type=_positive_int, default=None,
                   help="use a seeded random subset of this many source sentences")
    g.add_argument("--max-eval-sentences", type=_positive_int, default=None,
                   help="score only the first K dev/test sentences")
    g.add_argument("--max-words", type=_positive_int, default=None, help="drop training sentences longer than this")
    g.add_argument("--max-length", type=_positive_int, default=_D.max_length, help="sub-word pieces per sentence")
    m = p.add_argument_group("method")
    m.add_argument("--method", choices=("mclner", "token-classification"), default=_D.method,
                   help="mCL-NER (relation grid + contrastive views) or the softmax tagger baseline")
    m.add_argument("--no-codeswitch", action="store_true", help="train without code-switched sentences")
    m.add_argument("--no-sc", action="store_true", help="drop the sentence-level contrastive loss L_sc")
    m.add_argument("--no-tc", action="store_true", help="drop the relation-level contrastive loss L_tc")
    m.add_argument("--self-training-rounds", type=_nonneg_int, default=0, help="rounds of self-training (SPEC §5)")
    m.add_argument("--fusion", choices=("lstm", "transformer", "none"), default=_D.fusion,
                   help="contextual fusion layer over the pooled word states")
    m.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the encoder's word-embedding matrix fixed (default: on in --preset quick, else off)")
    m.add_argument("--biaffine-dim", type=_positive_int, default=_D.biaffine_dim, help="width d_b of hs/he")
    m.add_argument("--cln-hidden", type=_positive_int, default=_D.cln_hidden, help="hidden width of the CLN grid MLP")
    m.add_argument("--proj-dim", type=_positive_int, default=_D.proj_dim, help="contrastive projection width p")
    m.add_argument("--cs-word-ratio", type=_unit_float, default=_D.cs_word_ratio,
                   help="fraction of non-entity words also code-switched")
    m.add_argument("--w-cl", type=float, default=_D.w_cl, help="weight w of L_sc + L_tc in the source stage")
    m.add_argument("--w-tc-st", type=float, default=_D.w_tc_st, help="weight w1 of L_tc in self-training")
    m.add_argument("--w-mse", type=float, default=_D.w_mse, help="weight w2 of L_mse in self-training")
    m.add_argument("--tau-sc", type=_positive_float, default=_D.tau_sc, help="temperature of L_sc")
    m.add_argument("--tau-tc", type=_positive_float, default=_D.tau_tc, help="temperature of L_tc")
    m.add_argument("--tc-none-ratio", type=float, default=_D.tc_none_ratio,
                   help="L_tc: sampled NONE pairs per gold non-NONE pair")
    m.add_argument("--tc-max-pairs", type=_positive_int, default=_D.tc_max_pairs, help="L_tc: cap on the pairs M")
    m.add_argument("--calibrate-none-bias", action=argparse.BooleanOptionalAction, default=None,
                   help="after each stage, lower the NONE logit at decoding time by the bias (0 to 6) that "
                   "maximises source dev F1; kept in the checkpoint and used by evaluate/predict and the "
                   "self-training teacher (the losses are unchanged). Default: on in --preset quick, else off")
    m.add_argument("--st-threshold", type=_unit_float, default=_D.st_threshold,
                   help="self-training: minimum mean probability of a sentence's decoded relations")
    m.add_argument("--st-max-sentences", type=_positive_int, default=None,
                   help="self-training: pseudo-label at most this many unlabelled sentences")
    o = p.add_argument_group("optimisation")
    o.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="quick: CPU run < 30 min on 2 cores (subset, short sentences, 250 steps, "
                   "frozen word embeddings, calibrated decoding); full: all data, 10 epochs (GPU). "
                   "Explicit options override the preset")
    o.add_argument("--encoder-lr", type=_positive_float, default=_D.encoder_lr,
                   help="AdamW learning rate of the encoder")
    o.add_argument("--head-lr", type=_positive_float, default=_D.head_lr, help="AdamW learning rate of everything else")
    o.add_argument("--weight-decay", type=float, default=_D.weight_decay, help="AdamW weight decay (not on biases)")
    o.add_argument("--warmup-ratio", type=_unit_float, default=_D.warmup_ratio,
                   help="linear warm-up over this fraction of the steps, then linear decay to 0")
    o.add_argument("--batch-size", type=_positive_int, default=_D.batch_size,
                   help="sentences per micro-batch and process")
    o.add_argument("--effective-batch-size", type=_positive_int, default=_D.effective_batch_size,
                   help="sentences per optimizer step (gradient accumulation over micro-batches and processes)")
    o.add_argument("--epochs", type=_positive_int, default=_D.epochs, help="epochs per stage")
    o.add_argument("--max-steps", type=_positive_int, default=None,
                   help="optimizer steps per stage (overrides --epochs)")
    o.add_argument("--max-grad-norm", type=_positive_float, default=_D.max_grad_norm, help="gradient clipping")
    o.add_argument("--no-amp", action="store_true", help="disable mixed precision on a GPU")
    o.add_argument("--eval-every", type=_positive_int, default=None,
                   help="evaluate every K optimizer steps (default: after each epoch)")
    o.add_argument("--save-every", type=_positive_int, default=None,
                   help="write a resumable checkpoint every K optimizer steps (always at each evaluation)")
    o.add_argument("--patience", type=_nonneg_int, default=_D.patience,
                   help="stop after this many evaluations without improvement (0: never)")
    o.add_argument("--seed", type=int, default=_D.seed, help="random seed (data order, code-switching, init)")
    o.add_argument("--fused", action="store_true", help="use the fused op implementations (impl='auto')")
    o.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    o.add_argument("--resume", action="store_true", help="continue the run in --output-dir where it stopped")
    o.add_argument("--overwrite", action="store_true", help="delete --output-dir first")
    o.add_argument("--no-progress", action="store_true", help="no progress bars")
    o.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=_run_train)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed options: the preset first, then every option whose value differs from
    its default (so an option left at its default does not undo the preset)."""
    from mclner.training.config import apply_preset

    cfg = apply_preset(TrainConfig(), args.preset)
    defaults = TrainConfig()
    simple = ["source", "target_lang", "lexicon", "encoder", "output_dir", "max_train_sentences",
              "max_eval_sentences", "max_words", "max_length", "method", "fusion", "biaffine_dim", "cln_hidden",
              "proj_dim", "cs_word_ratio", "w_cl",
              "w_tc_st", "w_mse", "tau_sc", "tau_tc", "tc_none_ratio", "tc_max_pairs", "st_threshold",
              "st_max_sentences", "encoder_lr", "head_lr", "weight_decay", "warmup_ratio", "batch_size",
              "effective_batch_size", "epochs", "max_steps", "max_grad_norm", "eval_every", "save_every",
              "patience", "seed", "device", "target_unlabeled", "target_dev", "self_training_rounds"]
    for name in simple:
        v = getattr(args, name)
        # A preset sets some fields; an option overrides it only when it differs from its default.
        if v != getattr(defaults, name) or args.preset is None:
            setattr(cfg, name, v)
    cfg.target = None if (args.target or "").lower() in ("", "none") else args.target
    cfg.codeswitch = not args.no_codeswitch
    cfg.use_sc = not args.no_sc
    cfg.use_tc = not args.no_tc
    cfg.amp = not args.no_amp
    cfg.fused = bool(args.fused)
    if args.calibrate_none_bias is not None:
        cfg.calibrate_none_bias = args.calibrate_none_bias
    if args.freeze_embeddings is not None:
        cfg.freeze_embeddings = args.freeze_embeddings
    cfg.progress = not args.no_progress
    if cfg.effective_batch_size < cfg.batch_size:
        cfg.effective_batch_size = cfg.batch_size
    cfg.validate()
    return cfg


def _run_train(args: argparse.Namespace) -> int:
    from mclner.training.trainer import train

    cfg = config_from_args(args)
    out = Path(cfg.output_dir)
    if args.overwrite and args.resume:
        raise UserError("--overwrite and --resume exclude each other")
    if args.overwrite and out.exists():
        shutil.rmtree(out)
    if args.resume and not (out / "stages").exists():
        raise UserError(f"nothing to resume in {out} (no stages/ folder)")
    summary = train(cfg, resume=args.resume)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    elif "final" in summary:
        print(f"best model: {out / 'best'}; results: {out / 'results.json'}")
    return 0


# ----------------------------------------------------------------------------- evaluate / predict


def _load(checkpoint: str, device: Optional[str]):
    import torch

    from mclner.training.checkpoint import load_checkpoint
    from mclner.training.trainer import make_builder

    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, tokenizer, label_map, cfg = load_checkpoint(Path(checkpoint), dev)
    builder = make_builder(tokenizer, label_map, model.config.method)
    return model, builder, label_map, dev


def _run_evaluate(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.evaluation import evaluate, format_scores

    model, builder, label_map, dev = _load(args.checkpoint, args.device)
    sentences = [s for s in load_sentences(args.data, split=args.split, lang=args.lang) if s.tags is not None]
    if not sentences:
        raise UserError(f"{args.data} ({args.split}) has no labelled sentences to score")
    res = evaluate(model, sentences, builder, label_map, batch_size=args.batch_size, device=dev,
                   impl="auto" if args.fused else "reference", none_bias=args.none_bias)
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(format_scores(res))
    return 0


def _read_predict_input(args: argparse.Namespace) -> List[Any]:
    from mclner.data.readers import Sentence

    fmt = args.input_format
    src = args.input
    if fmt == "conll":
        from mclner.data.readers import read_conll

        if src == "-":
            raise UserError("--input-format conll needs a file path, not stdin")
        sents = read_conll(src)
        return [Sentence(list(s.tokens), None, args.lang or s.lang) for s in sents]
    if src == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(src).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UserError(f"{src}: no such file") from None
        except UnicodeDecodeError as exc:
            raise UserError(f"{src}: not UTF-8 text ({exc.reason})") from None
    from mclner.data.text import split_lines, split_words

    return [Sentence(split_words(line), None, args.lang or "xx") for line in split_lines(text)]


def _run_predict(args: argparse.Namespace) -> int:
    from mclner.data.grid import entities_to_iob2
    from mclner.evaluation import predict_entities

    model, builder, label_map, dev = _load(args.checkpoint, args.device)
    sentences = _read_predict_input(args)
    preds = predict_entities(model, sentences, builder, label_map, batch_size=args.batch_size, device=dev,
                             impl="auto" if args.fused else "reference",
                             none_bias=args.none_bias) if sentences else []
    out = sys.stdout if args.output == "-" else open(args.output, "w", encoding="utf-8")
    try:
        for s, ents in zip(sentences, preds):
            if args.output_format == "jsonl":
                rec = {"tokens": s.tokens, "entities": [
                    {"start": a, "end": b, "type": t, "text": " ".join(s.tokens[a : b + 1])} for a, b, t in ents]}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                for tok, tag in zip(s.tokens, entities_to_iob2(ents, len(s.tokens))):
                    out.write(f"{tok}\t{tag}\n")
                out.write("\n")
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _add_eval_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on labelled data (seqeval P/R/F1 per type)",
                       description="Entity-level micro precision/recall/F1 (seqeval, strict IOB2), overall and "
                       "per type. Predicted types absent from the data's label set (e.g. MISC on MSRA) are "
                       "dropped before scoring and listed.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder written by `mclner train` (e.g. runs/x/best)")
    p.add_argument("data", help="labelled data: embedded name (msra-zh, conll2003-en), HF dataset or CoNLL path")
    p.add_argument("--split", default="test", help="split of a named data set")
    p.add_argument("--lang", default=None, help="language code of the data (for path inputs)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="sentences per batch")
    p.add_argument("--fused", action="store_true", help="use the fused op implementations")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--none-bias", type=float, default=None,
                   help="decode with this bias subtracted from the NONE logit (relation models; default: the "
                   "checkpoint's calibrated value, 0 unless trained with --calibrate-none-bias)")
    p.set_defaults(func=_run_evaluate)

    q = sub.add_parser("predict", help="tag raw text or a CoNLL file with a checkpoint",
                       description="Read sentences (raw text: one sentence per line, split into words and punctuation, "
                       "CJK characters into single characters; or a CoNLL file) and write the entities "
                       "as JSON lines or the words with IOB2 tags.",
                       formatter_class=DefaultsHelpFormatter)
    q.add_argument("checkpoint", help="checkpoint folder written by `mclner train`")
    q.add_argument("--input", "-i", default="-", help="input file ('-' = stdin)")
    q.add_argument("--input-format", choices=("text", "conll"), default="text", help="raw text lines or CoNLL columns")
    q.add_argument("--output", "-o", default="-", help="output file ('-' = stdout)")
    q.add_argument("--output-format", choices=("jsonl", "iob2"), default="jsonl",
                   help="JSON lines {tokens, entities} or 'word<TAB>tag' lines with blank lines between sentences")
    q.add_argument("--lang", default=None, help="language code of the input")
    q.add_argument("--batch-size", type=_positive_int, default=32, help="sentences per batch")
    q.add_argument("--none-bias", type=float, default=None,
                   help="decode with this bias subtracted from the NONE logit (relation models; default: the "
                   "checkpoint's calibrated value, 0 unless trained with --calibrate-none-bias)")
    q.add_argument("--fused", action="store_true", help="use the fused op implementations")
    q.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    q.set_defaults(func=_run_predict)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_eval_predict(sub)
