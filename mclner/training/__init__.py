"""The training engine (`mclner train`): configuration, the method-agnostic trainer and checkpoints;
see docs/TRAINING.md. Methods live in `mclner.methods`."""

from mclner.training.config import TrainConfig, apply_preset

__all__ = ["TrainConfig", "apply_preset", "train"]


def train(cfg: TrainConfig, resume: bool = False) -> dict:
    """Run `mclner train` from Python; returns the summary written to ``<output_dir>/results.json``."""
    from mclner.training.trainer import train as _train

    return _train(cfg, resume=resume)
