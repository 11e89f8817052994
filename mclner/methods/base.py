"""The method seam: what a cross-lingual NER method declares, and the registry of methods.

A method is one folder under ``mclner/methods/`` (or a package naming it in the ``mclner.methods``
entry-point group) holding a :class:`Method` subclass decorated with :func:`register`. It declares its
options (a dataclass, from which the command line is generated), its presets, its model, how its
batches are made, its training stages, its loss for a batch and, where it has them, how it labels
target text for a later stage, its decoding options and how it calibrates its decoding. The trainer
(`mclner.training.trainer`) runs the stages and knows no method; decoding into entities, their scores
and what a plot reads are the model's (see :class:`NERModel`), so evaluation, prediction and the plots
know no method either. Every hook that a method may leave out has a default here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple, Type

import torch
import torch.nn as nn

from mclner.errors import UserError

Entity = Tuple[int, int, str]


@dataclass
class Stage:
    """One training stage as a method declares it.

    name: folder name under ``stages/`` and log prefix. weights: the method's loss weights and
    switches for this stage (read only by the method's ``loss``). streams: the data a batch holds,
    ``source`` (the method's training examples) and ``target`` (target sentences the method prepared
    in :meth:`Method.target_data`). teacher: the previous stage's best model, frozen, is passed to
    :meth:`Method.teacher_outputs`. max_steps: optimizer steps of this stage (None: the run's
    ``--max-steps``/``--epochs``). select_best: keep the checkpoint with the best dev F1 (False: the
    stage's last model is its result, e.g. a representation stage whose heads are not trained yet;
    the dev set is still evaluated and logged). The student starts from the previous stage's best
    model.
    """

    name: str
    weights: Dict[str, float] = field(default_factory=dict)
    streams: Tuple[str, ...] = ("source",)
    teacher: bool = False
    max_steps: Optional[int] = None
    select_best: bool = True


@dataclass
class Context:
    """What the trainer lends a method: the run's configuration and where to compute."""

    train: Any  # mclner.training.config.TrainConfig
    device: torch.device
    impl: str
    label_map: Any
    is_main: bool = True
    # The run's log: a record goes to log.jsonl; its "message", if any, is also printed (once, by the
    # main process). Methods report through it instead of printing.
    log: Callable[[Dict[str, Any]], None] = lambda record: None
    # Position of each training sentence in the source's train split and that split's size (files of
    # per-sentence data such as translations are given for the whole split).
    source_index: Optional[List[int]] = None
    source_total: int = 0
    # How translations into the target are split (mclner.data.segmentation.Segmentation), resolved by
    # the trainer from --target-segmentation and the target text; None: decided without target text.
    segmentation: Any = None


class NERModel(nn.Module):
    """A method's model: ``config`` (a dataclass with ``to_dict``/``from_dict``, saved in checkpoints)
    and ``decode``, which turns a collated batch into entities; the other hooks have defaults."""

    method: ClassVar[str] = ""
    config: Any

    def decode(self, batch: Dict[str, torch.Tensor], label_map: Any, *, impl: str = "reference",
               return_scores: bool = False, **options: Any) -> List[Tuple[List[Entity], Optional[torch.Tensor]]]:
        """Per sentence of the batch: its entities ``(start, end_inclusive, type)`` and, with
        return_scores, the model's per-sentence scores (e.g. tag probabilities ``[n, T]``).
        ``options`` are the method's decoding options (:attr:`Method.DecodeConfig`); a model ignores
        options it does not have."""
        raise NotImplementedError

    def entity_scores(self, entities: Sequence[Entity], scores: Optional[torch.Tensor],
                      label_map: Any) -> List[Optional[float]]:
        """A confidence in [0, 1] per decoded entity of one sentence, from the scores ``decode``
        returned for it (None where there are none). Default: scores are per-word distributions
        ``[n, T]``; an entity's score is the mean over its words of each word's highest probability."""
        if scores is None:
            return [None] * len(entities)
        p = scores.detach().float().cpu()
        if p.dim() != 2:
            raise ValueError(f"{type(self).__name__}: expected [n, T] scores, got shape {tuple(p.shape)}")
        best = p.max(-1).values
        return [float(best[s : e + 1].mean()) if e < best.shape[0] else None for s, e, _ in entities]

    def describe_decoding(self, **options: Any) -> str:
        """How ``decode(**options)`` chooses entities, for ``mclner evaluate`` (after ``decoding: ``)."""
        return "argmax per word (the method has no decoding bias)"

    def argmax_decoding(self) -> Optional[Dict[str, Any]]:
        """Decoding options that give the plain argmax when the model's own decoding differs from it
        (a calibrated setting); None when it is the argmax. The trainer then logs both dev scores."""
        return None

    def entity_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Word states ``[B, N, d]`` that represent entities (the entity plot)."""
        raise NotImplementedError(f"{type(self).__name__} has no word states for entity representations")

    def pair_views(self, batch: Dict[str, torch.Tensor], impl: str = "reference"
                   ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """The two contrastive views ``[n, n, p]`` of every word pair of the batch's first sentence
        (the relation-similarity plot); None for a model without pair-level views."""
        return None

    def token_classifier(self) -> Optional[Tuple[nn.Module, nn.Linear, List[str]]]:
        """``(Hugging Face encoder, linear tag classifier, IOB2 tags)`` when the model is exactly a
        token classifier over mean-pooled sub-word states (`mclner export` writes it as a standard
        token-classification model); None (the default) for any other decoding."""
        return None


class DictConfig:
    """to_dict/from_dict for the config dataclasses saved in checkpoints and run folders; from_dict
    ignores keys the dataclass does not have (a newer writer's extra fields)."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


def option(default: Any, help: str, **meta: Any) -> Any:
    """A method option: a dataclass field whose help text (and ``choices``, ``flag``) the command
    line uses. ``min``/``max`` bound numbers (validated, non-finite values are always refused).
    ``before`` is what runs recorded before the option existed did, when that is not the default (a
    default changed after the option was added): `--resume` and `--reuse-stages-from` compare with it."""
    return field(default=default, metadata={"help": help, **meta})


class Method:
    """Base class of the methods (see the module docstring). Subclasses set the class attributes and
    implement the methods that raise NotImplementedError."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    Config: ClassVar[type]  # dataclass of the method's options, fields made with `option`
    # preset name -> values of TrainConfig fields and of the method's options
    presets: ClassVar[Dict[str, Dict[str, Any]]] = {}
    # Options of decoding (fields made with `option`, all defaulting to None = the checkpoint's own
    # setting) that `mclner evaluate`/`predict` offer and pass to the model's ``decode``; None: none.
    DecodeConfig: ClassVar[Optional[type]] = None

    def __init__(self, config: Any = None) -> None:
        self.config = config if config is not None else self.Config()

    # -- model and batches
    def build_model(self, encoder: nn.Module, label_map: Any) -> NERModel:
        raise NotImplementedError

    def make_collator(self, tokenizer: Any, label_map: Any, max_length: int) -> Any:
        """A callable ``sentences -> batch dict`` (see `mclner.data.collate.SentenceCollator`)."""
        raise NotImplementedError

    def init_model(self, model: NERModel, examples: Sequence[Any], label_map: Any) -> Dict[str, Any]:
        """Data-dependent initialisation of a freshly built model, before the first stage (e.g. output
        biases from the label prior); returns what to log. Default: nothing."""
        return {}

    # -- data and stages
    def prepare_examples(self, sentences: Sequence[Any], ctx: Context) -> List[Any]:
        """The source training examples (e.g. each sentence with its code-switched copy); made once,
        so that a resumed run sees the same data. Default: each sentence alone
        (`mclner.data.batches.Example` without a second view), as the default :meth:`collate` reads them."""
        from mclner.data.batches import build_examples

        return build_examples(sentences, None)

    def needs_unlabeled(self) -> bool:
        """Whether a stage reads unlabelled target text (the trainer then loads it)."""
        return any("target" in s.streams for s in self.stages())

    def stages(self) -> List[Stage]:
        raise NotImplementedError

    def late_options(self) -> Dict[str, str]:
        """Options of the method that no earlier stage reads: option name -> the first stage whose
        training depends on it. ``mclner train --reuse-stages-from`` takes a finished stage from another
        run only when every option that differs is first read by a later stage. An option not named
        here counts as read from the first stage on (and by data preparation and model set-up), so
        naming too few only costs retraining; naming one too many would reuse a wrong stage, which
        tests/engine/test_reuse_stages.py checks against training from scratch. Default: none."""
        return {}

    def prepare_stage(self, model: NERModel, stage: Stage) -> None:
        """Called for every stage in order before it runs, after the previous stage's best weights are
        loaded and before the teacher is copied (also for stages a resumed run skips, so that settings
        kept in the model's config are the same): e.g. copy weights between parts of the model or set
        how it decodes. Default: nothing."""

    def trainable(self, stage: Stage) -> Optional[Callable[[str], bool]]:
        """Which parameters (by name in the model) the stage trains; the others get
        ``requires_grad=False`` for the stage, so that the optimizer neither updates nor decays them.
        None (the default): every parameter the run trains."""
        return None

    def target_data(self, stage: Stage, teacher: Optional[nn.Module], sentences: Sequence[Any],
                    collator: Any, ctx: Context) -> Tuple[List[Any], Dict[str, Any]]:
        """Target sentences for a stage that reads the ``target`` stream, and counts to report (e.g.
        pseudo-labelling by the teacher). Default: the unlabelled sentences as they are."""
        return list(sentences), {"target_sentences": len(sentences)}

    def collate(self, collator: Any, examples: Sequence[Any], target: Optional[Sequence[Any]],
                stage: Stage) -> Dict[str, Any]:
        """A training batch (CPU tensors) of ``stage`` from source examples and, when the stage reads
        it, target sentences. Default: the examples (`mclner.data.batches.Example`: ``src`` and, when
        they have a second view, ``cs`` and ``alignment``) and the target sentences as ``tgt``."""
        from mclner.data.batches import collate_examples

        batch = collate_examples(collator, examples) if examples else {}
        if target:
            batch["tgt"] = collator(list(target))
        return batch

    def teacher_outputs(self, teacher: nn.Module, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        """What the frozen teacher adds to a batch (called under no_grad)."""
        return {}

    def loss(self, model: nn.Module, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        """The loss terms (scalar tensors) of one micro-batch; ``loss`` is the weighted total that is
        back-propagated. Numbers that are not loss terms (counts, shares, thresholds) go in a dict under
        ``stats``: they are logged beside the terms but not shown as losses."""
        raise NotImplementedError

    # -- decoding
    def calibrates(self, stage: Stage) -> bool:
        """Whether :meth:`calibrate` chooses anything after ``stage``; the trainer skips it otherwise,
        without loading the stage's best."""
        return False

    def calibrate(self, model: NERModel, stage: Stage, dev: Sequence[Any], collator: Any,
                  ctx: Context) -> Optional[Dict[str, Any]]:
        """After a stage: decoding settings chosen on the source dev set, or None when the method has
        none. Returns ``{"model": {config field: value}}`` (set on the model's config, kept in the
        stage's best checkpoint and result; any JSON value) plus what to report in the stage result, and
        an optional one-line ``message``."""
        return None

    # -- options
    def validate(self) -> None:
        validate_options(self.config, self.name)


def option_flag(f: dataclasses.Field) -> str:
    """The command-line flag of an option field (``--name-with-dashes``, or its ``flag`` metadata)."""
    return "--" + f.metadata.get("flag", f.name.replace("_", "-"))


def validate_options(config: Any, owner: str) -> None:
    """Finite numbers within each field's ``min``/``max`` and one of its ``choices``."""
    import math

    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        flag = option_flag(f)
        if v is None or isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            if not math.isfinite(v):
                raise UserError(f"{flag} must be a finite number, got {v}")
            lo, hi = f.metadata.get("min"), f.metadata.get("max")
            if lo is not None and v < lo:
                raise UserError(f"{flag} must be >= {lo}, got {v}")
            if hi is not None and v > hi:
                raise UserError(f"{flag} must be <= {hi}, got {v}")
        choices = f.metadata.get("choices")
        if choices is not None and v not in choices:
            raise UserError(f"{flag} must be one of {', '.join(map(str, choices))}, got {v!r} ({owner})")


_REGISTRY: Dict[str, Type[Method]] = {}


def register(cls: Type[Method]) -> Type[Method]:
    """Class decorator: add a method to the registry under ``cls.name``."""
    if not cls.name or cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is empty or already registered")
    # a `before` value is what old runs are compared as (resume, reuse): it must be one the option takes
    for f in dataclasses.fields(cls.Config):
        if "before" in f.metadata:
            try:
                validate_options(dataclasses.replace(cls.Config(), **{f.name: f.metadata["before"]}), cls.name)
            except UserError as e:
                raise ValueError(f"method {cls.name!r}: 'before' of {option_flag(f)} is not valid: {e}") from None
    _REGISTRY[cls.name] = cls
    return cls


def registry() -> Dict[str, Type[Method]]:
    """Registered methods by name (importing `mclner.methods` registers the built-in ones)."""
    return dict(_REGISTRY)


def get_method(name: str) -> Type[Method]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choose one of {', '.join(sorted(_REGISTRY))}") from None


def config_from_dict(cls: Type[Method], values: Dict[str, Any]) -> Any:
    """The method's option dataclass from a dict (unknown keys are an error: they would be ignored)."""
    names = {f.name for f in dataclasses.fields(cls.Config)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"method {cls.name!r} has no option(s) {', '.join(unknown)}")
    return cls.Config(**values)
