"""Batched Kaldi-compatible log-mel filterbank in torch (no torchaudio), on whatever device the audio is.

It follows ``torchaudio.compliance.kaldi.fbank`` step by step (framing with ``snip_edges``, DC removal,
pre-emphasis, window, zero-padded FFT, power spectrum, Kaldi mel triangles, log with a float eps floor)
but works on a (B, N) batch at once. The audio plugins hold the presets that reproduce the official BEATs
and AudioMAE preprocessing, normalisation included (``modbind_audio_beats.frontend``,
``modbind_audio_mae.frontend``; verified against torchaudio's outputs in ``tests/fixtures/conformance/kaldi_fbank``).

Different-length clips share a batch through a trailing padding mask (B, N), True = padding:

* frames are computed on the padded waveform, so the first ``1 + (L - win) // shift`` frames of a clip
  of real length L are exactly those of the clip alone;
* ``subtract_waveform_mean`` uses the real samples only;
* with ``padded_frame_value`` set (AudioMAE), frames past the real ones are replaced by that raw value,
  which is what appending rows to the unpadded clip's fbank gives; with None (BEATs) they are computed
  from the zeros, which is what the official BEATs code does with a padded batch.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class FbankParams:
    """Every parameter of the Kaldi fbank and of the normalisation around it."""

    sample_rate: int = 16000
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    num_mel_bins: int = 128
    window_type: str = "povey"
    """'povey', 'hanning', 'hamming', 'rectangular' or 'blackman' (Kaldi's definitions)."""
    blackman_coeff: float = 0.42
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    round_to_power_of_two: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0
    """<= 0 means relative to Nyquist (Kaldi's convention)."""
    waveform_scale: float = 1.0
    """BEATs multiplies [-1, 1) audio by 2**15 first."""
    subtract_waveform_mean: bool = False
    """AudioMAE subtracts the clip mean before the fbank."""
    padded_frame_value: float | None = None
    """Raw (pre-normalisation) value of frames beyond a clip's real frames; None computes them."""
    target_frames: int | None = None
    """Pad (with ``padded_frame_value`` or 0) or cut the frame axis to this length."""
    norm_mean: float = 0.0
    norm_scale: float = 1.0
    """Output = (log-mel - norm_mean) / norm_scale."""

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms * 0.001)

    @property
    def shift_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms * 0.001)

    @property
    def fft_size(self) -> int:
        n = self.window_samples
        return 1 << (n - 1).bit_length() if self.round_to_power_of_two else n

    def num_frames(self, num_samples: int) -> int:
        """Frames Kaldi produces for ``num_samples`` (snip_edges=True); 0 when shorter than a window."""
        if num_samples < self.window_samples:
            return 0
        return 1 + (num_samples - self.window_samples) // self.shift_samples


def kaldi_fbank(
    waveforms: Tensor,
    *,
    params: FbankParams,
    padding_mask: Tensor | None = None,
    normalize: bool = True,
) -> Tensor:
    """Log-mel fbank of a batch: (B, N) waveforms -> (B, T, num_mel_bins) in the waveforms' float dtype.

    ``padding_mask`` (B, N), True = padding, must be trailing (real samples first). ``normalize=False``
    returns the raw Kaldi log-mel (what ``torchaudio.compliance.kaldi.fbank`` returns).
    """
    with torch.autocast(device_type=waveforms.device.type, enabled=False):  # log-mel needs full precision
        return _kaldi_fbank(_as_batch(waveforms), params, padding_mask, normalize)


def _kaldi_fbank(wave: Tensor, params: FbankParams, padding_mask: Tensor | None, normalize: bool) -> Tensor:
    batch, num_samples = wave.shape
    lengths = _real_lengths(padding_mask, batch, num_samples, wave.device)
    if params.subtract_waveform_mean:
        wave = _subtract_real_mean(wave, lengths)
    wave = wave * params.waveform_scale
    frames_total = params.num_frames(num_samples)
    if frames_total == 0:
        log_mel = wave.new_zeros(batch, 0, params.num_mel_bins)
    else:
        log_mel = _log_mel(wave, params)
    if params.padded_frame_value is not None and padding_mask is not None:
        keep = ~frame_padding_mask(lengths, frames_total, params)
        log_mel = torch.where(keep[:, :, None], log_mel, log_mel.new_tensor(params.padded_frame_value))
    if params.target_frames is not None:
        log_mel = _fit_frames(log_mel, params.target_frames, params.padded_frame_value or 0.0)
    if normalize:
        log_mel = (log_mel - params.norm_mean) / params.norm_scale
    return log_mel


def frame_padding_mask(lengths_or_mask: Tensor, num_frames: int, params: FbankParams) -> Tensor:
    """(B, num_frames) bool, True for frames that reach past a clip's real samples.

    Accepts real lengths (B,) or a trailing sample padding mask (B, N).
    """
    if lengths_or_mask.dim() == 2:
        lengths = (~lengths_or_mask.bool()).sum(dim=1)
    else:
        lengths = lengths_or_mask
    real_frames = torch.where(
        lengths >= params.window_samples,
        1 + torch.div(lengths - params.window_samples, params.shift_samples, rounding_mode="floor"),
        torch.zeros_like(lengths),
    )
    positions = torch.arange(num_frames, device=lengths.device)
    return positions[None, :] >= real_frames[:, None]


def _log_mel(wave: Tensor, params: FbankParams) -> Tensor:
    """Kaldi framing -> power spectrum -> mel -> log, for (B, N) already scaled waveforms."""
    frames = wave.unfold(-1, params.window_samples, params.shift_samples)  # (B, T, win), a view
    # The same operations in the same order as torchaudio (but |X|²), so float32 rounding matches closely.
    if params.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    if params.preemphasis != 0.0:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)  # x[-1] := x[0]
        frames = frames - params.preemphasis * previous
    frames = frames * _window(params, frames.device, frames.dtype)
    spectrum = torch.fft.rfft(frames, n=params.fft_size)  # zero-padded FFT, (B, T, fft/2 + 1)
    # |X|² as re² + im²: within 3e-7 relative of torchaudio's abs().pow(2), and 3x faster on the CPU
    power = spectrum.real.square() + spectrum.imag.square()
    mel = torch.matmul(power, _mel_banks(params, frames.device, frames.dtype).T)
    eps = torch.finfo(torch.float32).eps
    return torch.clamp_min(mel, eps).log()


@functools.lru_cache(maxsize=32)
def _window(params: FbankParams, device: torch.device, dtype: torch.dtype) -> Tensor:
    n = params.window_samples
    if params.window_type == "hanning":
        return torch.hann_window(n, periodic=False, device=device, dtype=dtype)
    if params.window_type == "povey":
        return torch.hann_window(n, periodic=False, device=device, dtype=dtype).pow(0.85)
    if params.window_type == "hamming":
        return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46, device=device, dtype=dtype)
    if params.window_type == "rectangular":
        return torch.ones(n, device=device, dtype=dtype)
    if params.window_type == "blackman":
        a = 2 * math.pi / (n - 1)
        t = torch.arange(n, device=device, dtype=dtype)
        c = params.blackman_coeff
        return c - 0.5 * torch.cos(a * t) + (0.5 - c) * torch.cos(2 * a * t)
    raise ValueError(f"unknown fbank window_type '{params.window_type}'")


@functools.lru_cache(maxsize=32)
def _mel_banks(params: FbankParams, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(num_mel_bins, fft/2 + 1) Kaldi triangles on the mel scale 1127 ln(1 + f/700), Nyquist column 0."""
    num_fft_bins = params.fft_size // 2
    nyquist = 0.5 * params.sample_rate
    high = params.high_freq if params.high_freq > 0.0 else params.high_freq + nyquist
    low = params.low_freq
    if not (0.0 <= low < nyquist and 0.0 < high <= nyquist and low < high):
        raise ValueError(f"bad fbank frequency range low={params.low_freq} high={params.high_freq} (nyquist {nyquist})")
    mel_low, mel_high = _mel(low), _mel(high)
    delta = (mel_high - mel_low) / (params.num_mel_bins + 1)
    bins = torch.arange(params.num_mel_bins, dtype=torch.float32)[:, None]
    left = mel_low + bins * delta
    center = mel_low + (bins + 1.0) * delta
    right = mel_low + (bins + 2.0) * delta
    fft_bin_width = params.sample_rate / params.fft_size
    freqs = fft_bin_width * torch.arange(num_fft_bins, dtype=torch.float32)
    mel = (1127.0 * torch.log1p(freqs / 700.0))[None, :]
    up = (mel - left) / (center - left)
    down = (right - mel) / (right - center)
    weights = torch.clamp_min(torch.minimum(up, down), 0.0)
    weights = F.pad(weights, (0, 1))
    return weights.to(device=device, dtype=dtype)


def _mel(freq: float) -> float:
    return 1127.0 * math.log(1.0 + freq / 700.0)


def _as_batch(waveforms: Tensor) -> Tensor:
    if waveforms.dim() == 1:
        waveforms = waveforms[None]
    if waveforms.dim() != 2:
        raise ValueError(f"kaldi_fbank expects waveforms of shape (batch, samples), got {tuple(waveforms.shape)}")
    if not waveforms.is_floating_point():
        waveforms = waveforms.float()
    return waveforms


def _real_lengths(padding_mask: Tensor | None, batch: int, num_samples: int, device: torch.device) -> Tensor:
    if padding_mask is None:
        return torch.full((batch,), num_samples, dtype=torch.long, device=device)
    if padding_mask.shape != (batch, num_samples):
        raise ValueError(f"padding_mask shape {tuple(padding_mask.shape)} does not match waveforms ({batch}, {num_samples})")
    return (~padding_mask.bool()).sum(dim=1).to(device)


def _subtract_real_mean(wave: Tensor, lengths: Tensor) -> Tensor:
    """Subtract each clip's mean over its real samples; padding stays exactly zero."""
    real = torch.arange(wave.shape[1], device=wave.device)[None, :] < lengths[:, None]
    total = torch.where(real, wave, torch.zeros_like(wave)).sum(dim=1, keepdim=True)
    mean = total / lengths.clamp_min(1)[:, None].to(wave.dtype)
    return torch.where(real, wave - mean, torch.zeros_like(wave))


def _fit_frames(log_mel: Tensor, target: int, fill: float) -> Tensor:
    frames = log_mel.shape[1]
    if frames >= target:
        return log_mel[:, :target]
    return F.pad(log_mel, (0, 0, 0, target - frames), value=fill)
