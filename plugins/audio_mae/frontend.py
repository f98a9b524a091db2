"""AudioMAE's input: the shared Kaldi fbank with the official AudioSet evaluation settings.

Clip mean removed, hanning window, 128 mel bins, exactly 1024 frames (padded with the raw value 0),
normalised as ``(x + 4.2677393) / (2 * 4.5689974)``. The rate comes from the plugin options (16 kHz).
"""

from __future__ import annotations

import dataclasses

import torch

from modbind.audio.fbank import FbankParams, frame_padding_mask, kaldi_fbank
from modbind.contracts import Batch

SAMPLE_RATE = 16000
"""The only rate AudioMAE checkpoints were trained at."""

AUDIOMAE_FBANK = FbankParams(
    sample_rate=SAMPLE_RATE,
    window_type="hanning",
    subtract_waveform_mean=True,
    padded_frame_value=0.0,
    target_frames=1024,
    norm_mean=-4.2677393,
    norm_scale=2 * 4.5689974,
)
"""AudioMAE's AudioSet eval path: mean removal, hanning window, 1024 frames, (x + 4.2677393) / (2 * 4.5689974)."""


def max_clip_seconds() -> float:
    """Longest clip whose frames all fit the 1024-frame input: (1024 - 1) hops plus one window."""
    params = AUDIOMAE_FBANK
    samples = (params.target_frames - 1) * params.shift_samples + params.window_samples
    return samples / params.sample_rate


def audiomae_features(batch: Batch, sample_rate: int) -> Batch:
    """Official AudioMAE fbank (B, 1024, 128) and its frame padding mask (B, 1024), True = padding."""
    params = dataclasses.replace(AUDIOMAE_FBANK, sample_rate=sample_rate)
    waveform = batch["waveform"].float()
    sample_mask = batch.get("padding_mask")
    fbank = kaldi_fbank(waveform, params=params, padding_mask=sample_mask)
    if sample_mask is None:
        frame_mask = torch.zeros(fbank.shape[:2], dtype=torch.bool, device=fbank.device)
    else:
        frame_mask = frame_padding_mask(sample_mask.to(fbank.device), fbank.shape[1], params)
    return {"features": fbank, "padding_mask": frame_mask}
