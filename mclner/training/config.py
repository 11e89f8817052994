"""Training configuration and presets (`mclner train --preset quick|full`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from mclner.errors import UserError


@dataclass
class TrainConfig:
    """Everything `mclner train` needs; saved with each checkpoint (``training_args.json``)."""

    # data (the embedded default, SPEC.md §7)
    source: str = "conll2003-en"
    target: Optional[str] = "msra-zh"  # evaluated after training (test split)
    target_unlabeled: Optional[str] = None  # default: the target's train split, tags ignored
    target_dev: Optional[str] = None  # model selection on a target dev set instead of the source dev
    target_lang: str = "zh"
    lexicon: Optional[str] = "cc-cedict"
    encoder: str = "multilingual-e5-small"
    output_dir: str = "runs/mclner"
    # method and ablations
    method: str = "mclner"
    codeswitch: bool = True
    use_sc: bool = True
    use_tc: bool = True
    self_training_rounds: int = 0
    cs_word_ratio: float = 0.3
    fusion: str = "lstm"
    # Keep the encoder's word-embedding matrix fixed: it is most of e5-small's weights (250k x 384), so
    # the step is cheaper, and source-only updates of it would pull English rows away from the target's.
    freeze_embeddings: bool = False
    biaffine_dim: int = 128
    cln_hidden: int = 128
    proj_dim: int = 128
    # loss weights (SPEC §4 Eq. 8, §5)
    w_cl: float = 0.1
    w_tc_st: float = 0.1
    w_mse: float = 1.0
    tau_sc: float = 0.1
    tau_tc: float = 0.1
    tc_none_ratio: float = 1.0
    tc_max_pairs: int = 4096
    st_threshold: float = 0.9
    # Choose a decoding bias against the NONE class on the source dev set after each stage (relation
    # models; off = the paper's plain argmax decoding). See docs/TRAINING.md.
    calibrate_none_bias: bool = False
    st_max_sentences: Optional[int] = None
    # optimisation
    encoder_lr: float = 3e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    batch_size: int = 8
    effective_batch_size: int = 32
    epochs: int = 10
    max_steps: Optional[int] = None  # optimizer steps; overrides epochs
    max_grad_norm: float = 1.0
    amp: bool = True  # only on a GPU
    eval_every: Optional[int] = None  # optimizer steps; default: each epoch
    patience: int = 3  # evaluations without improvement before stopping (0: never stop early)
    seed: int = 42
    fused: bool = False
    device: Optional[str] = None
    # data size limits (quick preset)
    max_train_sentences: Optional[int] = None
    max_eval_sentences: Optional[int] = None
    max_words: Optional[int] = None  # drop longer training sentences
    max_length: int = 512  # sub-word pieces per sentence
    num_workers: int = 0
    log_every: int = 1
    progress: bool = True
    save_every: Optional[int] = None  # optimizer steps between resumable checkpoints; default: at each eval
    # Stop after this many optimizer steps as if the process were killed (tests of --resume).
    stop_after_steps: Optional[int] = None

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> TrainConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def validate(self) -> None:
        if self.method not in ("mclner", "token-classification"):
            raise UserError(f"--method must be 'mclner' or 'token-classification', got {self.method!r}")
        for name in ("batch_size", "effective_batch_size", "epochs"):
            if getattr(self, name) <= 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps <= 0:
            raise UserError(f"--max-steps must be positive, got {self.max_steps}")
        if self.effective_batch_size % self.batch_size:
            raise UserError(
                f"--effective-batch-size ({self.effective_batch_size}) must be a multiple of --batch-size "
                f"({self.batch_size})"
            )
        for name in ("encoder_lr", "head_lr", "tau_sc", "tau_tc"):
            if not getattr(self, name) > 0:
                raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.st_threshold <= 1.0:
            raise UserError(f"--st-threshold must be in [0, 1], got {self.st_threshold}")
        if not 0.0 <= self.cs_word_ratio <= 1.0:
            raise UserError(f"--cs-word-ratio must be in [0, 1], got {self.cs_word_ratio}")
        if self.self_training_rounds < 0:
            raise UserError(f"--self-training-rounds must be >= 0, got {self.self_training_rounds}")
        if self.fusion not in ("lstm", "transformer", "none"):
            raise UserError(f"--fusion must be lstm, transformer or none, got {self.fusion!r}")
        from mclner.training.guards import validate_train_config

        validate_train_config(self)  # every float finite and in range, seed, max_length, device


# quick: a CPU run under 30 minutes on 2 cores: a few thousand short source sentences, a short
# schedule and small evaluation sets. 250 steps because the relation grid needs ~200 before its
# non-NONE cells win the argmax (docs/RESULTS.md); frozen word embeddings halve the step time on CPU,
# encoder_lr 1e-4 makes up for the short schedule, and calibrated decoding for the NONE prior that such
# a short schedule leaves (docs/TRAINING.md). full: the whole data, the paper's batch of 32, for a GPU.
PRESETS: Dict[str, Dict[str, Any]] = {
    "quick": dict(
        max_train_sentences=2000, max_eval_sentences=500, max_words=40, batch_size=16,
        effective_batch_size=32, max_steps=250, eval_every=50, epochs=1, st_max_sentences=1000,
        tc_max_pairs=1024, encoder_lr=1e-4, freeze_embeddings=True, calibrate_none_bias=True,
    ),
    "full": dict(batch_size=16, effective_batch_size=32, epochs=10, eval_every=None, max_words=None),
}


def apply_preset(cfg: TrainConfig, preset: Optional[str]) -> TrainConfig:
    if preset is None:
        return cfg
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    for k, v in PRESETS[preset].items():
        setattr(cfg, k, v)
    return cfg
