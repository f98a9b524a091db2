"""BEATs' input: the shared Kaldi fbank with the official ``BEATs.preprocess`` settings.

BEATs was trained on 16 kHz audio scaled to int16 range, povey window, 128 mel bins, normalised as
``(x - 15.41663) / (2 * 6.55582)``. The rate itself comes from the plugin options (validated to 16 kHz).
"""

from __future__ import annotations

import dataclasses

import torch

from modbind.audio.fbank import FbankParams, kaldi_fbank
from modbind.contracts import Batch
from modbind_audio_beats.model import coarsen_padding_mask

SAMPLE_RATE = 16000
"""The only rate BEATs checkpoints were trained at."""

BEATS_FBANK = FbankParams(sample_rate=SAMPLE_RATE, waveform_scale=2.0**15, norm_mean=15.41663,
                          norm_scale=2 * 6.55582)
"""``BEATs.preprocess``: povey window, 2**15 scaling, (x - 15.41663) / (2 * 6.55582)."""


def beats_features(batch: Batch, sample_rate: int) -> Batch:
    """Normalised BEATs fbank (B, T, 128) and the official frame padding mask (B, T)."""
    params = dataclasses.replace(BEATS_FBANK, sample_rate=sample_rate)
    fbank = kaldi_fbank(batch["waveform"].float(), params=params)
    sample_mask = batch.get("padding_mask")
    if sample_mask is None:
        frame_mask = torch.zeros(fbank.shape[:2], dtype=torch.bool, device=fbank.device)
    else:
        frame_mask = coarsen_padding_mask(sample_mask.bool(), fbank.shape[1])
    return {"features": fbank, "padding_mask": frame_mask}
