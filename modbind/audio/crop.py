"""Fixed-length windows of a clip: the paper's random truncation for training, a fixed policy for eval.

Both policies return the window and a padding mask (True = padding). Padding is always at the end, so
the real length of an example is ``(~mask).sum()``; the silence that random truncation puts *before* a
short clip is part of the example (a random onset), not padding.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def crop_or_pad(
    samples: np.ndarray | Tensor,
    length: int,
    *,
    train: bool,
    generator: torch.Generator | None = None,
    min_length: int = 0,
) -> tuple[Tensor, Tensor]:
    """A ``length``-sample window of ``samples`` and its padding mask.

    ``train=True`` (random truncation): a longer clip gives a uniformly random window; a shorter clip is
    placed after a random amount of leading silence, then zero padding. ``train=False``: the first
    ``length`` samples, or the clip followed by zero padding. ``min_length`` counts at least that many
    samples as real (a clip shorter than one fbank window is extended with silence instead of producing
    an all-padding example).
    """
    if length <= 0:
        raise ValueError(f"crop length must be positive, got {length}")
    wave = torch.as_tensor(np.asarray(samples) if not isinstance(samples, Tensor) else samples)
    wave = wave.reshape(-1).to(torch.float32)
    n = int(wave.numel())
    out = torch.zeros(length, dtype=torch.float32)
    if n >= length:
        start = _randint(n - length, generator) if train else 0
        out.copy_(wave[start : start + length])
        real = length
    else:
        offset = _randint(length - n, generator) if train else 0
        out[offset : offset + n] = wave
        real = offset + n
    real = min(length, max(real, min_length))
    padding_mask = torch.ones(length, dtype=torch.bool)
    padding_mask[:real] = False
    return out, padding_mask


def _randint(high: int, generator: torch.Generator | None) -> int:
    """Uniform integer in [0, high]."""
    if high <= 0:
        return 0
    return int(torch.randint(0, high + 1, (1,), generator=generator).item())
