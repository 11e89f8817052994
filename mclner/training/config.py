"""The run's common configuration (data, encoder, optimisation, output). A method's own options live
in its ``Config`` dataclass (`mclner.methods`) and are kept here under ``method_options``; presets are
per method (``Method.presets``)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from mclner.data.segmentation import SEGMENTATIONS
from mclner.data.segmenters import SEGMENTERS as SEGMENTERS_RAW
from mclner.errors import UserError
from mclner.methods.base import DictConfig, option
from mclner.ops.impl import FUSED_HELP, IMPL_CHOICES, IMPL_HELP
from mclner.training.guards import MAX_SEED, MIN_MAX_LENGTH


def _data(default: Any, help: str, **meta: Any) -> Any:
    return option(default, help, group="data", **meta)


def _opt(default: Any, help: str, **meta: Any) -> Any:
    return option(default, help, group="optimisation", **meta)


@dataclass
class TrainConfig(DictConfig):
    """Everything `mclner train` needs besides the method's options; saved as ``training_args.json``."""

    # data (the embedded default: docs/DATA.md)
    source: str = _data("conll2003-en", "labelled source data: embedded name, HF dataset or path")
    target: Optional[str] = _data("msra-zh", "target data; its test split is scored after training ('none' to skip)")
    target_unlabeled: Optional[str] = _data(
        None, "unlabelled target text for the stages that read it (default: the target's train split, tags ignored)")
    target_dev: Optional[str] = _data(None, "select the model on this target dev set instead of the source dev set")
    target_lang: str = _data("zh", "target language code (code-switching, tokenisation)")
    target_segmentation: str = _data(
        "auto", "how translated and code-switched target words are split to look like the target corpus's tokens: "
        "char = one token per character (per-character corpora such as MSRA, WikiANN zh/ja), word = the lexicon's "
        "words as they are (word- or morpheme-segmented corpora), auto = inferred from the target text (unlabelled, "
        "else test): word when more than 0.3 of its CJK tokens have several characters, and for non-CJK targets",
        choices=SEGMENTATIONS)
    target_segmenter: Optional[str] = _data(
        None, "how raw target text is split into words: by `mclner predict` and NERPredictor (recorded in the "
        "checkpoint) and for --target-unlabeled-format text. char = one word per Han/kana character, space = Han/kana "
        "runs between spaces, fugashi or sudachipy = Japanese words, jieba = Chinese words (optional extras "
        "mclner[ja], mclner[ja-sudachi], mclner[zh]); default: char for a per-character target, else fugashi (ja), "
        "jieba (zh) or space", choices=SEGMENTERS_RAW)
    target_unlabeled_format: str = _data(
        "conll", "--target-unlabeled is CoNLL (words in the first column) or raw text, one sentence per line, split "
        "with --target-segmenter", choices=("conll", "text"))
    lexicon: Optional[str] = _data("cc-cedict", "bilingual lexicon for code-switching (name or path)")
    encoder: str = _data("multilingual-e5-small", "encoder: embedded name or a Hugging Face folder")
    output_dir: str = _data("runs/mclner", "where checkpoints, logs and results go")
    max_train_sentences: Optional[int] = _data(None, "use a seeded random subset of this many source sentences", min=1)
    max_eval_sentences: Optional[int] = _data(None, "score only the first K dev/test sentences", min=1)
    max_unlabeled_sentences: Optional[int] = _data(None, "use at most this many unlabelled target sentences "
                                                         "(a seeded random subset)", min=1)
    max_words: Optional[int] = _data(None, "drop training sentences longer than this", min=1)
    max_length: int = _data(512, "sub-word pieces per sentence", min=MIN_MAX_LENGTH)
    # method (its options: method_options)
    method: str = "mclner"
    method_options: Dict[str, Any] = field(default_factory=dict)
    # Keep the encoder's word-embedding matrix fixed: it is most of e5-small's weights (250k x 384), so
    # the step is cheaper, and source-only updates of it would pull English rows away from the target's.
    freeze_embeddings: bool = _opt(False, "keep the encoder's word-embedding matrix fixed")
    # optimisation
    encoder_lr: float = _opt(3e-5, "AdamW learning rate of the encoder", min=1e-12, max=1.0)
    head_lr: float = _opt(1e-3, "AdamW learning rate of everything else", min=1e-12, max=1.0)
    weight_decay: float = _opt(0.01, "AdamW weight decay (not on biases and norm scales)", min=0.0, max=1.0)
    warmup_ratio: float = _opt(0.1, "linear warm-up over this fraction of the steps, then linear decay to 0",
                               min=0.0, max=1.0)
    head_warmup_steps: int = _opt(0, "encoder learning rate 0 for the first N optimizer steps of the first stage, so "
                                     "that the freshly initialised heads fit first; then the encoder's own linear "
                                     "warm-up (--warmup-ratio) starts (0: off)", min=0)
    batch_size: int = _opt(8, "sentences per micro-batch and process", min=1)
    effective_batch_size: int = _opt(32, "sentences per optimizer step (gradient accumulation over micro-batches "
                                         "and processes)", min=1)
    epochs: int = _opt(10, "epochs per stage", min=1)
    max_steps: Optional[int] = _opt(None, "optimizer steps per stage (overrides --epochs)", min=1)
    max_grad_norm: float = _opt(1.0, "gradient clipping", min=1e-12)
    length_buckets: int = _opt(0, "sort each window of K micro-batches of the epoch's shuffled order by sentence "
                                  "length before cutting it into batches, then shuffle the batches: less padding "
                                  "(with K=50 in the quick preset 22 instead of 56 in 100 encoder pieces), other "
                                  "batches, so other numbers (0: off)", min=0)
    amp: bool = _opt(True, "mixed precision (only on a GPU)")
    eval_every: Optional[int] = _opt(None, "evaluate every K optimizer steps (default: after each epoch)", min=1)
    patience: int = _opt(3, "stop after this many evaluations without improvement (0: never)", min=0)
    seed: int = _opt(42, "random seed (data order, code-switching, initialisation)", min=0, max=MAX_SEED)
    # None: not chosen, i.e. auto (mclner.ops.impl.DEFAULT_IMPL), or on --resume the implementation the run
    # recorded; the trainer writes the one it resolved into training_args.json and the checkpoints.
    impl: Optional[str] = _opt(None, f"{IMPL_HELP} (default: auto; --resume keeps the run's own)",
                               choices=IMPL_CHOICES)
    fused: bool = _opt(False, FUSED_HELP, flag_only=True)
    device: Optional[str] = _opt(None, "torch device (default: cuda when available, else cpu)")
    log_every: int = _opt(1, "write the loss terms to log.jsonl every K optimizer steps", min=1)
    progress: bool = _opt(True, "progress bars")
    save_every: Optional[int] = _opt(None, "write a resumable checkpoint every K optimizer steps "
                                           "(always at each evaluation)", min=1)
    # Stop after this many optimizer steps as if the process were killed (tests of --resume).
    stop_after_steps: Optional[int] = None


    def method_instance(self) -> Any:
        """The configured method with its options (validated)."""
        from mclner.methods import get_method
        from mclner.methods.base import config_from_dict

        cls = get_method(self.method)
        m = cls(config_from_dict(cls, self.method_options))
        m.validate()
        return m

    def validate(self) -> None:
        from mclner.methods.base import validate_options

        validate_options(self, "common")
        if self.effective_batch_size % self.batch_size:
            raise UserError(
                f"--effective-batch-size ({self.effective_batch_size}) must be a multiple of --batch-size "
                f"({self.batch_size})"
            )
        for name in ("encoder_lr", "head_lr"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"--{name.replace('_', '-')} must be finite")
        from mclner.training.guards import validate_train_config

        validate_train_config(self)  # seed, max_length, device
        self.method_instance()


def apply_preset(cfg: TrainConfig, preset: Optional[str]) -> TrainConfig:
    """``cfg`` with the method's preset values (common fields and method options) applied."""
    if preset is None:
        return cfg
    from mclner.methods import get_method

    cls = get_method(cfg.method)
    if preset not in cls.presets:
        raise UserError(f"method {cfg.method!r} has no preset {preset!r}; choose one of {', '.join(cls.presets)}")
    common = {f.name for f in dataclasses.fields(TrainConfig)}
    for k, v in cls.presets[preset].items():
        if k in common:
            setattr(cfg, k, v)
        else:
            cfg.method_options[k] = v
    return cfg


def recorded_impl(args: Any) -> Optional[str]:
    """The op implementation a run used, from its ``training_args.json`` (a dict): its ``impl``
    (the trainer records the one it resolved), ``auto`` for ``--fused``, and ``reference`` for a run
    recorded before ``auto`` became the default (``impl`` unset); None when ``args`` is not a run's options."""
    if not isinstance(args, dict) or "impl" not in args:
        return None
    impl = args["impl"]
    if impl in IMPL_CHOICES:
        return impl
    if impl is None:
        return "auto" if args.get("fused") else "reference"
    return None
