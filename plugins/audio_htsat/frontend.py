"""HTS-AT's log-mel front-ends in torch: STFT power spectrum, a mel filterbank, dB.

Two filterbanks, because the released towers were trained on two:

* ``slaney`` (official HTS-AT, non-fused LAION-CLAP): Slaney mel scale with Slaney area normalisation. The
  official model (torchlibrosa ``Spectrogram`` + ``LogmelFilterBank``) computes the STFT as a float32
  ``conv1d`` with DFT kernels; here ``torch.stft`` does the same transform with an FFT, which is ~20x
  cheaper. Measured on 10 s clips: the log-mel differs by up to 4.6e-4 dB at 32 kHz (official HTS-AT), and
  at 48 kHz with the full-size 768-d LAION-CLAP tower by up to 5.4e-4 dB, with embeddings within 2e-6
  (9.5e-7 and 1.8e-6 in two sets of random weights; 1.4e-6 of it remains when both Swin implementations
  get LAION-CLAP's own log-mel). Cells more than ~60 dB below a clip's peak differ more (up to ~3e-2 dB
  near -100 dB), because both STFTs are float32. Details: ``tests/fixtures/conformance/laion_clap``.
  The mel matrix reproduces ``librosa.filters.mel(htk=False, norm="slaney")`` value for value, so it can
  be checked against the ``logmel_extractor.melW`` tensor official checkpoints carry.
* ``htk`` (fused LAION-CLAP): HTK mel scale, triangles of peak 1 with no normalisation, which is what
  LAION-CLAP's ``get_mel`` asks of ``torchaudio.transforms.MelSpectrogram`` for fused models. Its STFT is
  ``torch.stft`` too, so only the filterbank's float rounding differs (computed here in float64).

bn0 and the stretch to 1024 frames belong to the model (``ClapAudioModel`` does both), not to this
front-end: ``log_mel`` stops at the dB values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor


MelScale = Literal["slaney", "htk"]
"""``slaney``: official HTS-AT and non-fused LAION-CLAP; ``htk``: fused LAION-CLAP (module docstring)."""


@dataclass(frozen=True)
class FrontEndParams:
    """Everything that fixes the log-mel; the defaults are the official AudioSet ``config.py``."""

    sample_rate: int = 32000
    n_fft: int = 1024
    hop_length: int = 320
    n_mels: int = 64
    fmin: float = 50.0
    fmax: float = 14000.0
    amin: float = 1e-10
    ref: float = 1.0
    mel_scale: MelScale = "slaney"

    @classmethod
    def for_rate(cls, sample_rate: int, mel_scale: MelScale = "slaney") -> FrontEndParams:
        """Official (32 kHz, hop 320) and LAION-CLAP (48 kHz, hop 480) both use 10 ms hops and a 1024 FFT."""
        return cls(sample_rate=sample_rate, hop_length=int(round(sample_rate / 100)), mel_scale=mel_scale)

    def frames(self, samples: int) -> int:
        """Frames a centred STFT gives for ``samples`` samples (1 + N // hop)."""
        return 1 + samples // self.hop_length

    @property
    def min_samples(self) -> int:
        """Reflect padding by n_fft/2 needs more input samples than that."""
        return self.n_fft // 2 + 1


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above."""
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    hz = np.asarray(hz, dtype=np.float64)
    mels = hz / f_sp
    log_region = hz >= min_log_hz
    mels[log_region] = min_log_mel + np.log(hz[log_region] / min_log_hz) / logstep
    return mels


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    mels = np.asarray(mels, dtype=np.float64)
    hz = f_sp * mels
    log_region = mels >= min_log_mel
    hz[log_region] = min_log_hz * np.exp(logstep * (mels[log_region] - min_log_mel))
    return hz


def mel_filterbank(params: FrontEndParams) -> Tensor:
    """(n_fft/2 + 1, n_mels) float32 filterbank of ``params.mel_scale``."""
    if params.mel_scale == "htk":
        return htk_mel_filterbank(params)
    return slaney_mel_filterbank(params)


def slaney_mel_filterbank(params: FrontEndParams) -> Tensor:
    """(n_fft/2 + 1, n_mels) float32: triangular Slaney-scale filters with Slaney area normalisation.

    Computed in float64 and rounded to float32 in the same two steps as librosa, so it equals the
    ``logmel_extractor.melW`` of official checkpoints bit for bit.
    """
    mel_min, mel_max = _hz_to_slaney_mel(np.array([params.fmin, params.fmax]))
    edges = _slaney_mel_to_hz(np.linspace(mel_min, mel_max, params.n_mels + 2))
    weights = _triangles(params, edges)
    weights *= (2.0 / (edges[2 : params.n_mels + 2] - edges[: params.n_mels]))[:, None]
    return torch.from_numpy(np.ascontiguousarray(weights.T))


def htk_mel_filterbank(params: FrontEndParams) -> Tensor:
    """(n_fft/2 + 1, n_mels) float32: triangular HTK-scale filters of peak 1, no area normalisation.

    The filterbank ``torchaudio.functional.melscale_fbanks(norm=None, mel_scale="htk")`` describes (the one
    fused LAION-CLAP towers were trained on); torchaudio builds it in float32, this in float64, so entries
    differ by float32 rounding only.
    """
    mel_min, mel_max = 2595.0 * np.log10(1.0 + np.array([params.fmin, params.fmax]) / 700.0)
    edges = 700.0 * (10.0 ** (np.linspace(mel_min, mel_max, params.n_mels + 2) / 2595.0) - 1.0)
    return torch.from_numpy(np.ascontiguousarray(_triangles(params, edges).T))


def _triangles(params: FrontEndParams, edges: np.ndarray) -> np.ndarray:
    """(n_mels, n_freqs) float32: filter i rises from edges[i] to 1 at edges[i+1] and falls to edges[i+2]."""
    fft_freqs = np.fft.rfftfreq(n=params.n_fft, d=1.0 / params.sample_rate)
    widths = np.diff(edges)
    ramps = np.subtract.outer(edges, fft_freqs)
    weights = np.zeros((params.n_mels, len(fft_freqs)), dtype=np.float32)
    for i in range(params.n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    return weights


def log_mel(waveforms: Tensor, params: FrontEndParams, mel_matrix: Tensor | None = None) -> Tensor:
    """(B, N) float waveforms -> (B, 1 + N // hop, n_mels) log-mel in dB (ref 1, amin 1e-10, no top_db).

    Centred periodic-Hann STFT with reflect padding, power spectrum, mel projection, then dB.
    """
    if waveforms.dim() != 2:
        raise ValueError(f"log_mel expects (batch, samples) waveforms, got shape {tuple(waveforms.shape)}")
    if waveforms.shape[1] < params.min_samples:
        raise ValueError(
            f"log_mel needs at least {params.min_samples} samples per clip for reflect padding, "
            f"got {waveforms.shape[1]}"
        )
    waveforms = waveforms.to(torch.float32)
    window = torch.hann_window(params.n_fft, periodic=True, dtype=torch.float32, device=waveforms.device)
    spectrum = torch.stft(
        waveforms,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        win_length=params.n_fft,
        window=window,
        center=True,
        pad_mode="reflect",
        return_complex=True,
    )
    power = spectrum.real.square() + spectrum.imag.square()  # (B, freqs, T)
    if mel_matrix is None:
        mel_matrix = mel_filterbank(params)
    mel = torch.matmul(power.transpose(1, 2), mel_matrix.to(device=power.device, dtype=power.dtype))
    decibels = 10.0 * torch.log10(torch.clamp(mel, min=params.amin))
    return decibels - 10.0 * math.log10(max(params.amin, params.ref))
