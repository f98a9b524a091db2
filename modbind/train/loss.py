"""Symmetric InfoNCE between modality and caption embeddings, with negatives from every rank.

Each rank gathers the embeddings of all ranks so the softmax runs over the *global* batch, as open_clip
does. Only the local slice keeps its autograd graph (gathering with gradient would double-count), and
the loss is scaled by the world size before backward so that, after the engine averages gradients over
ranks, they equal the gradients of one process holding the whole global batch.
"""

from __future__ import annotations

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


def symmetric_info_nce(modality: Tensor, text: Tensor, logit_scale: Tensor) -> Tensor:
    """Mean of modality→text and text→modality cross-entropy over the global batch.

    ``modality`` and ``text`` are this rank's L2-normalised (n, d) embeddings, row i of one paired with
    row i of the other. Returns the global-batch loss (identical on every rank); an empty global batch
    gives a zero that still depends on the parameters, so every rank runs the same backward.
    """
    all_modality = gather_keep_local_grad(modality.float())
    all_text = gather_keep_local_grad(text.float())
    if all_modality.shape[0] == 0:
        return modality.sum() * 0.0 + logit_scale * 0.0
    logits = logit_scale * all_modality @ all_text.T
    targets = torch.arange(logits.shape[0], device=logits.device)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
