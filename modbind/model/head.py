"""Projection heads: map the encoder's pooled width onto the anchor's embedding dimension."""

from __future__ import annotations

from typing import Literal

from torch import nn

HeadKind = Literal["linear", "mlp"]


def build_head(kind: HeadKind, width: int, dim: int) -> nn.Module:
    """A fresh head from encoder ``width`` to anchor ``dim``.

    ``linear`` is the paper's head; ``mlp`` (Linear-GELU-Linear, hidden = width) is a cheap extra option
    when the encoder's pooled space is far from the anchor's.
    """
    if kind == "linear":
        return nn.Linear(width, dim)
    if kind == "mlp":
        return nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, dim))
    raise ValueError(f"unknown head kind '{kind}' (expected 'linear' or 'mlp')")
