"""Decode audio files (or in-memory arrays) into mono float32 at the rate an encoder wants.

Repairs applied, so one odd file never stops a run (each is documented and deterministic):

* several channels (stereo, 8-channel, ...) -> mean over channels (mono mixdown);
* any sample rate (e.g. 96 kHz) -> resampled with soxr (high quality) to the requested rate;
* integer PCM arrays -> scaled to [-1, 1);
* NaN / +-inf samples -> replaced by 0.0 when they are at most :data:`MAX_NONFINITE_FRACTION` of the
  clip; beyond that the file is rejected.

Everything else that makes a file unusable (missing, zero bytes, a corrupt header, no samples) raises
:class:`modbind.errors.DataError` naming the file, which the data loader counts and skips.
Clips shorter than one fbank window are not an error here: :func:`modbind.audio.crop.crop_or_pad` pads them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modbind.errors import DataError

log = logging.getLogger(__name__)

MAX_NONFINITE_FRACTION = 0.01
"""Largest share of NaN/inf samples that is silently zeroed; more means the file is broken."""

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
"""File endings the decoder reads (through libsndfile)."""


@dataclass
class AudioClip:
    """Mono float32 samples at a known rate: the raw item every audio plugin works from."""

    samples: np.ndarray
    """(N,) float32, nominally in [-1, 1]."""
    sample_rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def load_audio(path: Path, sample_rate: int) -> AudioClip:
    """Decode ``path`` to mono float32 at ``sample_rate``; raise DataError naming the file if unusable."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise DataError(f"audio file {path} not found (check the manifest's path and root)")
    if path.stat().st_size == 0:
        raise DataError(f"audio file {path} is empty (0 bytes); re-download or drop it from the manifest")
    try:
        samples, source_rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.SoundFileError, ValueError, EOFError) as err:
        # LibsndfileError derives from RuntimeError in soundfile >= 0.11
        raise DataError(f"audio file {path} cannot be decoded ({_first_line(err)}); is it a valid wav/flac/ogg/mp3?") from None
    return _to_clip(samples, int(source_rate), sample_rate, where=f"audio file {path}")


def to_clip(samples: np.ndarray, source_rate: int, sample_rate: int) -> AudioClip:
    """Turn an in-memory array into an :class:`AudioClip` with the same repairs as :func:`load_audio`.

    ``samples`` may be (N,), (N, C) as soundfile returns it, or (C, N); for 2-D input the shorter axis is
    taken as channels. Integer arrays are scaled from their PCM range to [-1, 1).
    """
    array = np.asarray(samples)
    if array.ndim == 1:
        array = array[:, None]
    elif array.ndim == 2:
        if array.shape[0] < array.shape[1]:
            array = array.T
    else:
        raise DataError(f"audio array has shape {array.shape}; expected (N,), (N, channels) or (channels, N)")
    if np.issubdtype(array.dtype, np.integer):
        array = array.astype(np.float32) / float(np.iinfo(array.dtype).max + 1)
    return _to_clip(array.astype(np.float32, copy=False), int(source_rate), sample_rate, where="audio array")


def _to_clip(frames: np.ndarray, source_rate: int, sample_rate: int, *, where: str) -> AudioClip:
    """(N, C) float32 at ``source_rate`` -> repaired mono clip at ``sample_rate``."""
    if source_rate <= 0:
        raise DataError(f"{where} reports sample rate {source_rate}; the header is corrupt")
    if frames.shape[0] == 0:
        raise DataError(f"{where} contains no samples")
    mono = frames.mean(axis=1, dtype=np.float32) if frames.shape[1] > 1 else frames[:, 0]
    mono = _repair_nonfinite(np.ascontiguousarray(mono, dtype=np.float32), where)
    if source_rate != sample_rate:
        mono = resample(mono, source_rate, sample_rate)
    return AudioClip(samples=mono, sample_rate=sample_rate)


def resample(samples: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr ('HQ'), mono float32 in and out."""
    import soxr

    if source_rate == sample_rate:
        return samples
    out = soxr.resample(samples, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def _repair_nonfinite(mono: np.ndarray, where: str) -> np.ndarray:
    """Zero a few NaN/inf samples; reject clips where they are more than a glitch."""
    bad = ~np.isfinite(mono)
    count = int(bad.sum())
    if count == 0:
        return mono
    if count > MAX_NONFINITE_FRACTION * len(mono):
        raise DataError(
            f"{where} has {count} of {len(mono)} samples that are NaN or infinite "
            f"(more than {MAX_NONFINITE_FRACTION:.0%}); the file is corrupt"
        )
    log.debug("%s: zeroed %d non-finite samples", where, count)
    repaired = mono.copy()
    repaired[bad] = 0.0
    return repaired


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0]
