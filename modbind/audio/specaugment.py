"""SpecAugment (frequency and time masking) on batched fbank features, drawn independently per example.

Each mask has a width drawn uniformly from [0, F] (or [0, T]) and a uniform start, as in Park et al. and
torchaudio's ``FrequencyMasking``/``TimeMasking`` (``iid_masks=True``). Time masks stay inside an
example's real frames when a padding mask is given, so a short clip is not masked only in its padding.
Masked values are set to ``mask_value`` (0 = the normalised fbank's mean).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from modbind.contracts import Augmentation, Batch


def spec_augment(
    features: Tensor,
    *,
    freq_mask: int = 48,
    time_mask: int = 96,
    n_freq_masks: int = 1,
    n_time_masks: int = 1,
    padding_mask: Tensor | None = None,
    generator: torch.Generator | None = None,
    mask_value: float = 0.0,
) -> Tensor:
    """Masked copy of ``features`` (B, T, F); ``padding_mask`` (B, T) is True on padded frames."""
    if features.dim() != 3:
        raise ValueError(f"spec_augment expects (batch, frames, bins) features, got shape {tuple(features.shape)}")
    batch, frames, bins = features.shape
    # Widths and starts are drawn where the generator lives (the trainer's is on the training device).
    draw_on = generator.device if generator is not None else features.device
    if padding_mask is not None:
        real_frames = (~padding_mask.bool()).sum(dim=1).to(draw_on)
    else:
        real_frames = torch.full((batch,), frames, dtype=torch.long, device=draw_on)
    all_bins = torch.full((batch,), bins, dtype=torch.long, device=draw_on)
    freq = _band_mask(batch, bins, all_bins, freq_mask, n_freq_masks, generator)
    time = _band_mask(batch, frames, real_frames, time_mask, n_time_masks, generator)
    drop = freq.to(features.device)[:, None, :] | time.to(features.device)[:, :, None]
    return features.masked_fill(drop, mask_value)


def _band_mask(
    batch: int, size: int, extent: Tensor, max_width: int, count: int, generator: torch.Generator | None
) -> Tensor:
    """(batch, size) bool: ``count`` bands per row of width U[0, max_width] inside the first ``extent`` cells."""
    device = extent.device
    mask = torch.zeros(batch, size, dtype=torch.bool, device=device)
    if max_width <= 0 or count <= 0:
        return mask
    positions = torch.arange(size, device=device)
    extent = extent.to(torch.long).clamp(min=0, max=size)
    for _ in range(count):
        width = torch.floor(torch.rand(batch, generator=generator, device=device) * (max_width + 1)).to(torch.long)
        width = torch.minimum(width, extent)
        start = torch.floor(torch.rand(batch, generator=generator, device=device) * (extent - width + 1)).to(torch.long)
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

    def __call__(self, features: Batch, generator: torch.Generator | None = None, **params: Any) -> Batch:
        if "features" not in features:
            raise KeyError("spec_augment needs featurized audio: a batch with a 'features' (B, T, F) tensor")
        out = dict(features)
        out["features"] = spec_augment(
            features["features"], padding_mask=features.get("padding_mask"), generator=generator, **params
        )
        return out
