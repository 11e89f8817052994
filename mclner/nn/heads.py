"""Heads over word states: the relation head (biaffine + conditional layer norm, through
`mclner.ops`), the token head and the projection MLP (docs/METHOD.md §3–§4)."""

from __future__ import annotations

from typing import Dict

import torch
import torch.nn as nn

from mclner import ops


class MLP(nn.Sequential):
    """Linear → GELU → dropout → linear (the contrastive projections)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


class RelationHead(nn.Module):
    """Word states ``[B, N, D]`` → relation logits ``S = S^bia + S^cln`` ``[B, N, N, C]``.

    ``hs = MLP_s(h)``, ``he = MLP_e(h)`` (width ``biaffine_dim``) feed `ops.biaffine`; the conditional
    layer norm head (γ_i ⊙ n_j + λ_i, then a GELU MLP of width ``cln_hidden``) is `ops.cln_head`, which
    never materialises the ``[B, N, N, D]`` pair features in its fused implementations.
    """

    def __init__(self, dim: int, num_classes: int, biaffine_dim: int = 128, cln_hidden: int = 128,
                 dropout: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        D, Db, C = dim, biaffine_dim, num_classes
        self.eps = eps
        self.dropout = nn.Dropout(dropout)
        self.mlp_s = nn.Sequential(nn.Linear(D, Db), nn.GELU())
        self.mlp_e = nn.Sequential(nn.Linear(D, Db), nn.GELU())
        self.U = nn.Parameter(torch.empty(C, Db, Db))
        self.W_bi = nn.Parameter(torch.empty(C, 2 * Db))
        self.b_bi = nn.Parameter(torch.zeros(C))
        nn.init.xavier_uniform_(self.U)
        nn.init.xavier_uniform_(self.W_bi)
        # Conditional layer norm starts as a plain layer norm (γ = 1, λ = 0) and learns the conditioning.
        self.W_alpha = nn.Parameter(torch.zeros(D, D))
        self.b_alpha = nn.Parameter(torch.ones(D))
        self.W_beta = nn.Parameter(torch.zeros(D, D))
        self.b_beta = nn.Parameter(torch.zeros(D))
        self.cln_1 = nn.Linear(D, cln_hidden)
        self.cln_2 = nn.Linear(cln_hidden, C)

    def forward(self, h: torch.Tensor, impl: str = "reference") -> Dict[str, torch.Tensor]:
        """``{"logits": [B, N, N, C], "hs": [B, N, Db], "he": [B, N, Db]}``."""
        hd = self.dropout(h)
        hs, he = self.mlp_s(hd), self.mlp_e(hd)
        dt = hs.dtype  # under autocast the activations may be bf16/fp16: the ops want one dtype
        s_bia = ops.biaffine(hs, he, self.U.to(dt), self.W_bi.to(dt), self.b_bi.to(dt), impl=impl)
        s_cln = ops.cln_head(
            h.to(dt), self.W_alpha.to(dt), self.b_alpha.to(dt), self.W_beta.to(dt), self.b_beta.to(dt),
            self.cln_1.weight.to(dt), self.cln_1.bias.to(dt), self.cln_2.weight.to(dt), self.cln_2.bias.to(dt),
            eps=self.eps, impl=impl,
        )
        return {"logits": s_bia + s_cln, "hs": hs, "he": he}

    def pair_features_at(self, h: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """The CLN pair features r'_ij of the listed pairs only ``[M, D]`` (same γ/λ/n as the head)."""
        return ops.cln_pair_features_at(h, self.W_alpha, self.b_alpha, self.W_beta, self.b_beta, b, i, j,
                                        eps=self.eps)


class TokenHead(nn.Module):
    """Word states ``[B, N, D]`` → per-word tag logits ``[B, N, T]``."""

    def __init__(self, dim: int, num_tags: int) -> None:
        super().__init__()
        self.classifier = nn.Linear(dim, num_tags)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.classifier(h)
