"""SpecAugment (frequency and time masking) on batched fbank features, drawn independently per example.

Each mask has a width drawn uniformly from [0, F] (or [0, T]) and a uniform start, as in Park et al. and
torchaudio's ``FrequencyMasking``/``TimeMasking`` (``iid_masks=True``). Time masks stay inside an
example's real frames when a padding mask is given, so a short clip is not masked only in its padding.
Masked values are set to ``mask_value`` (0 = the normalised fbank's mean). Widths and starts come from
per-example streams when the trainer passes them, so a clip's masks do not depend on its batch.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from modbind.contracts import Augmentation, Batch, Randomness, draw_uniform


def spec_augment(
    features: Tensor,
    *,
    freq_mask: int = 48,
    time_mask: int = 96,
    n_freq_masks: int = 1,
    n_time_masks: int = 1,
    padding_mask: Tensor | None = None,
    generator: Randomness = None,
    mask_value: float = 0.0,
) -> Tensor:
    """Masked copy of ``features`` (B, T, F); ``padding_mask`` (B, T) is True on padded frames.

    ``generator`` may hold one stream per example (:class:`~modbind.contracts.ItemRandomness`, as the
    trainer passes): example i's masks then depend on its own stream only, not on the batch around it.
    """
    if features.dim() != 3:
        raise ValueError(f"spec_augment expects (batch, frames, bins) features, got shape {tuple(features.shape)}")
    batch, frames, bins = features.shape
    device = features.device
    # per example: a (width, start) pair of uniform draws for each frequency mask, then for each time mask
    draws = draw_uniform(generator, batch, n_freq_masks + n_time_masks, 2, device=device)
    if padding_mask is not None:
        real_frames = (~padding_mask.bool()).sum(dim=1).to(device)
    else:
        real_frames = torch.full((batch,), frames, dtype=torch.long, device=device)
    all_bins = torch.full((batch,), bins, dtype=torch.long, device=device)
    freq = _band_mask(bins, all_bins, freq_mask, draws[:, :n_freq_masks])
    time = _band_mask(frames, real_frames, time_mask, draws[:, n_freq_masks:])
    drop = freq[:, None, :] | time[:, :, None]
    return features.masked_fill(drop, mask_value)


def _band_mask(size: int, extent: Tensor, max_width: int, draws: Tensor) -> Tensor:
    """(batch, size) bool: one band per (width, start) draw pair of ``draws`` (batch, count, 2), each of width
    U[0, max_width] inside the first ``extent`` cells of its row."""
    batch = extent.shape[0]
    mask = torch.zeros(batch, size, dtype=torch.bool, device=extent.device)
    if max_width <= 0:
        return mask
    positions = torch.arange(size, device=extent.device)
    extent = extent.to(torch.long).clamp(min=0, max=size)
    for index in range(draws.shape[1]):
        width = torch.floor(draws[:, index, 0] * (max_width + 1)).to(torch.long)
        width = torch.minimum(width, extent)
        start = torch.floor(draws[:, index, 1] * (extent - width + 1)).to(torch.long)
        mask |= (positions[None, :] >= start[:, None]) & (positions[None, :] < (start + width)[:, None])
    return mask


class SpecAugmentParams(BaseModel):
    """The recipe entry's ``params``: :func:`spec_augment`'s keyword arguments (defaults: the paper's)."""

    model_config = ConfigDict(extra="forbid")

    freq_mask: int = Field(48, ge=0)
    """Widest frequency mask, in bins (F)."""
    time_mask: int = Field(96, ge=0)
    """Widest time mask, in frames (T)."""
    n_freq_masks: int = Field(1, ge=0)
    n_time_masks: int = Field(1, ge=0)
    mask_value: float = 0.0


class SpecAugment(Augmentation):
    """The recipe-selectable form: ``train.augmentations: [{name: spec_augment, params: {freq_mask: 48}}]``."""

    name: ClassVar[str] = "spec_augment"
    modality: ClassVar[str] = "audio"
    Params: ClassVar[type[SpecAugmentParams]] = SpecAugmentParams

    def __call__(self, features: Batch, generator: Randomness = None, **params: Any) -> Batch:
        if "features" not in features:
            raise KeyError("spec_augment needs featurized audio: a batch with a 'features' (B, T, F) tensor")
        out = dict(features)
        out["features"] = spec_augment(
            features["features"], padding_mask=features.get("padding_mask"), generator=generator, **params
        )
        return out
