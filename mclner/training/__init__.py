"""Training, self-training and checkpoints for mCL-NER (`mclner train`); see docs/TRAINING.md."""

from mclner.training.config import PRESETS, TrainConfig, apply_preset

__all__ = ["PRESETS", "TrainConfig", "apply_preset", "train"]


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run `mclner train` from Python; returns the summary written to ``<output_dir>/results.json``."""
    from mclner.training.trainer import train as _train

    return _train(cfg, resume=resume)
