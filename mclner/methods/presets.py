"""Preset values of the common options (`mclner.training.config.TrainConfig` fields) that the
methods share; each method's ``presets`` start from them and add their own options.

The quick preset: a CPU run of a whole method (e.g. mCL-NER's source stage and one self-training round)
in under 30 minutes on 2 cores. Short sentences from a subset, frozen word embeddings (half the CPU
step: they are most of e5-small's weights) with a higher encoder lr for the short schedule
(docs/TRAINING.md). The full preset: all data, 10 epochs (a GPU).
"""

from __future__ import annotations

from typing import Any, Dict

QUICK_COMMON: Dict[str, Any] = dict(
    max_train_sentences=2000, max_eval_sentences=500, max_words=40, batch_size=16, effective_batch_size=32,
    max_steps=250, eval_every=50, epochs=1, max_unlabeled_sentences=1000, encoder_lr=1e-4, freeze_embeddings=True,
)
FULL_COMMON: Dict[str, Any] = dict(batch_size=16, effective_batch_size=32, epochs=10, eval_every=None, max_words=None)
