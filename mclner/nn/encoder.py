"""Word encoder: a `transformers` encoder, sub-word pieces mean-pooled to words, dropout, and an
optional contextual fusion layer (docs/METHOD.md §3)."""

from __future__ import annotations

import math
from typing import Dict, List, Optional

import torch
import torch.nn as nn

FUSIONS = ("lstm", "transformer", "none")


def pool_words(hidden: torch.Tensor, word_index: torch.Tensor, num_words: int) -> torch.Tensor:
    """Mean of each word's sub-word states: ``[B, L, d]`` → ``[B, N, d]`` (words without pieces → 0)."""
    B, L, d = hidden.shape
    valid = (word_index >= 0).unsqueeze(-1).to(hidden.dtype)
    idx = word_index.clamp(min=0).unsqueeze(-1).expand(B, L, d)
    summed = hidden.new_zeros(B, num_words, d).scatter_add_(1, idx, hidden * valid)
    counts = hidden.new_zeros(B, num_words, 1).scatter_add_(1, idx[..., :1], valid)
    return summed / counts.clamp(min=1.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the words of each sentence: ``[B, N, d]`` with mask ``[B, N]`` → ``[B, d]``."""
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class WordEncoder(nn.Module):
    """``batch`` (from `mclner.data.collate.RelationCollator`) → word states ``[B, N, d]``.

    ``encoder`` is any `transformers` model with ``last_hidden_state``; ``fusion`` is ``lstm`` (a
    BiLSTM with d/2 units per direction, as W2NER), ``transformer`` (one encoder layer) or ``none``.
    """

    def __init__(self, encoder: nn.Module, fusion: str = "none", dropout: float = 0.1) -> None:
        super().__init__()
        if fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        self.encoder = encoder
        d = int(encoder.config.hidden_size)
        self.encoder_hidden = d
        self.dropout = nn.Dropout(dropout)
        self.fusion: Optional[nn.Module]
        if fusion == "lstm":
            self.fusion = nn.LSTM(d, d // 2, batch_first=True, bidirectional=True)
            self.dim = 2 * (d // 2)
        elif fusion == "transformer":
            heads = max(1, math.gcd(d, 8))
            self.fusion = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout, batch_first=True)
            self.dim = d
        else:
            self.fusion = None
            self.dim = d

    def forward(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        N = batch["word_mask"].shape[1]
        h = self.dropout(pool_words(out.last_hidden_state, batch["word_index"], N))
        if isinstance(self.fusion, nn.LSTM):
            lengths = batch["word_mask"].sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out_p, _ = self.fusion(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=N)
        elif self.fusion is not None:
            h = self.fusion(h, src_key_padding_mask=~batch["word_mask"].bool())
        return h


def hf_encoders(model: nn.Module) -> List[nn.Module]:
    """The outermost `transformers` models inside ``model`` (a method may hold several encoders)."""
    from transformers import PreTrainedModel

    found: List[nn.Module] = []
    for m in model.modules():
        if isinstance(m, PreTrainedModel) and not any(any(m is x for x in f.modules()) for f in found):
            found.append(m)
    return found
