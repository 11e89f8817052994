"""Model parts shared by the methods: the word encoder, heads over `mclner.ops`, and the losses.

Each part is written once; a method (``mclner/methods/<name>/``) composes them."""

from mclner.nn.encoder import FUSIONS, WordEncoder, masked_mean, pool_words
from mclner.nn.heads import MLP, RelationHead, TokenHead
from mclner.nn.losses import (
    kl_to_teacher,
    labelled_ce,
    prob_mse,
    relation_info_nce,
    sentence_info_nce,
    token_ce,
)

__all__ = [
    "FUSIONS",
    "MLP",
    "RelationHead",
    "TokenHead",
    "WordEncoder",
    "kl_to_teacher",
    "labelled_ce",
    "masked_mean",
    "pool_words",
    "prob_mse",
    "relation_info_nce",
    "sentence_info_nce",
    "token_ce",
]
