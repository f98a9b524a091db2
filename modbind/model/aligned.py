"""The trainable model: a plugin's encoder, a projection head and the learnable temperature.

This is exactly what the engine optimises and what export saves; the frozen anchor is never part of it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from modbind.contracts import Batch, ModalityEncoder
from modbind.model.head import HeadKind, build_head

MAX_LOGIT_SCALE = 100.0
"""CLIP clamps the exponentiated logit scale at 100 so the softmax never becomes a hard argmax."""


class AlignedEncoder(nn.Module):
    """encoder → pooled → head → L2-normalised embedding, plus ``log_logit_scale`` for InfoNCE."""

    def __init__(self, encoder: ModalityEncoder, dim: int, *, head: HeadKind = "linear", logit_scale: float = 1 / 0.07):
        super().__init__()
        self.encoder = encoder
        self.head = build_head(head, encoder.width, dim)
        self.head_kind: HeadKind = head
        self.dim = dim
        # shape (1,), not a 0-d scalar: DeepSpeed broadcasts parameters as byte views, which 0-d tensors refuse
        self.log_logit_scale = nn.Parameter(torch.full((1,), math.log(min(logit_scale, MAX_LOGIT_SCALE))))

    def forward(self, features: Batch) -> Tensor:
        pooled = self.encoder(features).pooled
        projected = self.head(pooled.to(_dtype_of(self.head)))
        return F.normalize(projected.float(), dim=-1)

    def logit_scale(self) -> Tensor:
        """exp(log scale), clamped like CLIP (the clamp also keeps gradients finite)."""
        return self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)


def _dtype_of(module: nn.Module) -> torch.dtype:
    for param in module.parameters():
        return param.dtype
    return torch.float32
