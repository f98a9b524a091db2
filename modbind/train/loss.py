"""Symmetric InfoNCE between modality and caption embeddings, with negatives from every rank.

Each rank gathers the embeddings of all ranks so the softmax runs over the *global* batch, as open_clip
does. Only the local slice keeps its autograd graph (gathering with gradient would double-count). The
loss is built so that the ranks' gradients *summed* equal one process's gradient on the whole global batch;
the trainer scales it by the world size before backward, because the engine *averages* over ranks.

Two kinds of parameters need this: those reached through this rank's embedding rows (encoder and head)
get exactly their share, since other ranks' rows are constants here; but ``logit_scale`` multiplies every
logit, so every rank computes its full gradient, and summing W of them would give W times the gradient.
Its gradient is therefore divided by the world size (:func:`_shared_by_ranks`). Nothing else enters the loss
except the cached caption embeddings, which are constants.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_keep_local_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from all ranks in rank order; ranks may hold different numbers of rows.

    Other ranks' rows arrive as constants; this rank's rows are ``x`` itself, so gradients flow to
    the local encoder only.
    """
    if world_size() == 1:
        return x
    rank = dist.get_rank()
    count = torch.tensor([x.shape[0]], dtype=torch.long, device=x.device)
    counts = [torch.zeros_like(count) for _ in range(world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = x.new_zeros((max(sizes), *x.shape[1:]))
    padded[: x.shape[0]] = x.detach()
    received = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(received, padded)
    parts = [part[:n] for part, n in zip(received, sizes)]
    parts[rank] = x
    return torch.cat(parts)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; the gradient multiplied by ``factor`` (exactly, unlike an ``a/W + detach`` sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, factor: float) -> Tensor:  # type: ignore[override]
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.factor, None


def _shared_by_ranks(x: Tensor) -> Tensor:
    """``x`` as a value every rank uses in full: each rank gets 1/W of its gradient, so the sum is one gradient."""
    world = world_size()
    return x if world == 1 else _ScaleGradient.apply(x, 1.0 / world)


def symmetric_info_nce(modality: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Mean of modality→text and text→modality cross-entropy over the global batch.

    ``modality`` and ``text`` are this rank's L2-normalised (n, d) embeddings, row i of one paired with
    row i of the other. Returns the global-batch loss (identical on every rank); an empty global batch
    gives a zero that still depends on the parameters, so every rank runs the same backward. Summed over
    ranks, the gradients equal one process's on the global batch (see the module docstring).
    """
    logit_scale = _shared_by_ranks(logit_scale)
    all_modality = gather_keep_local_grad(modality.float())
    all_text = gather_keep_local_grad(text.float())
    if all_modality.shape[0] == 0:
        return modality.sum() * 0.0 + logit_scale * 0.0
    logits = logit_scale * all_modality @ all_text.T
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
