"""Decode audio files (or in-memory arrays) into mono float32 at the rate an encoder wants.

Repairs applied, so one odd file never stops a run (each is documented and deterministic):

* several channels (stereo, 8-channel, ...) -> mean over channels (mono mixdown);
* any sample rate (e.g. 96 kHz) -> resampled with soxr (high quality) to the requested rate;
* integer PCM arrays -> scaled to [-1, 1);
* NaN / +-inf samples -> replaced by 0.0 when they are at most :data:`MAX_NONFINITE_FRACTION` of the
  clip; beyond that the file is rejected. Recorded as :data:`NONFINITE_ZEROED`;
* float samples beyond full scale (a float WAV peaking at 15.0) -> the clip is scaled down so its peak is
  1.0. Scaling keeps the waveform's shape, where clipping would distort it, and a clip's overall level is
  arbitrary anyway (it only shifts the log-mel features by a constant). Recorded as :data:`PEAK_NORMALISED`.

The two repairs that change the signal are logged at WARNING with the file name and listed in
:attr:`AudioClip.repairs`, so a caller can count them (``Counter(t for c in clips for t in c.repairs)``).

Everything else that makes a file unusable (missing, zero bytes, a corrupt header, no samples, a header
that declares more than ``max_seconds`` of audio) raises :class:`modbind.errors.DataError` naming the file,
which the data loader counts and skips. Clips shorter than one fbank window are not an error here:
:func:`modbind.audio.crop.crop_or_pad` pads them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modbind.errors import DataError, exception_reason

log = logging.getLogger(__name__)

MAX_NONFINITE_FRACTION = 0.01
"""Largest share of NaN/inf samples that is zeroed; more means the file is broken."""

DEFAULT_MAX_SECONDS = 3600.0
"""Longest audio a file may declare (an hour) unless the caller allows more (audio option ``max_seconds``).

Checked on the header, before decoding: a few-KB WAV whose header claims 1 Hz holds hours of "audio" and
resamples into hundreds of MB (a 2 MB one into ~64 GB), so such a file is refused instead of decoded.
"""

NONFINITE_ZEROED = "nonfinite_zeroed"
"""Repair tag: a few NaN/inf samples were replaced by 0.0."""
PEAK_NORMALISED = "peak_normalised"
"""Repair tag: float samples beyond ±1 were scaled down so that the peak is 1.0."""

# The usual file endings of libsndfile's container formats (its format names are not file endings).
_EXTENSIONS_BY_FORMAT: dict[str, tuple[str, ...]] = {
    "WAV": (".wav",), "WAVEX": (".wav",), "RF64": (".rf64",), "W64": (".w64",), "FLAC": (".flac",),
    "OGG": (".ogg", ".oga"), "MP3": (".mp3",), "AIFF": (".aif", ".aiff", ".aifc"), "AU": (".au", ".snd"),
    "CAF": (".caf",), "VOC": (".voc",), "NIST": (".sph",),
}


def _decodable_extensions() -> tuple[str, ...]:
    """The endings of the formats this machine's libsndfile reads; ``.opus`` where it decodes Opus in Ogg."""
    import soundfile

    formats = soundfile.available_formats()
    found = [ext for name, endings in _EXTENSIONS_BY_FORMAT.items() if name in formats for ext in endings]
    if "OGG" in formats and "OPUS" in soundfile.available_subtypes("OGG"):
        found.append(".opus")
    return tuple(dict.fromkeys(found))


AUDIO_EXTENSIONS = _decodable_extensions()
"""File endings the decoder reads: THE list for everything that picks audio files by name."""


@dataclass
class AudioClip:
    """Mono float32 samples at a known rate: the raw item every audio plugin works from."""

    samples: np.ndarray
    """(N,) float32, nominally in [-1, 1]."""
    sample_rate: int
    repairs: tuple[str, ...] = ()
    """Tags of the repairs that changed the signal (:data:`NONFINITE_ZEROED`, :data:`PEAK_NORMALISED`)."""

    @property
    def seconds(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def load_audio(path: Path, sample_rate: int, *, max_seconds: float = DEFAULT_MAX_SECONDS) -> AudioClip:
    """Decode ``path`` to mono float32 at ``sample_rate``; raise DataError naming the file if unusable.

    A file whose header declares more than ``max_seconds`` of audio is refused before anything is decoded.
    """
    import soundfile

    path = Path(path)
    where = f"audio file {path}"
    if not path.is_file():
        raise DataError(f"{where} not found (check the manifest's path and root)")
    if path.stat().st_size == 0:
        raise DataError(f"{where} is empty (0 bytes); re-download or drop it from the manifest")
    try:
        with soundfile.SoundFile(str(path)) as handle:
            _check_declared_length(handle.frames, handle.samplerate, max_seconds, where=where)
            samples = handle.read(dtype="float32", always_2d=True)
            source_rate = handle.samplerate
    except (RuntimeError, soundfile.SoundFileError, ValueError, EOFError) as err:
        # LibsndfileError derives from RuntimeError in soundfile >= 0.11
        raise DataError(f"{where} cannot be decoded ({exception_reason(err)}); is it a valid audio file?") from None
    return _to_clip(samples, int(source_rate), sample_rate, where=where)


def _check_declared_length(frames: int, rate: int, max_seconds: float, *, where: str) -> None:
    """Refuse a header that declares more than ``max_seconds`` of audio (a corrupt or hostile file)."""
    if rate > 0 and frames / rate > max_seconds:
        raise DataError(
            f"{where} declares {frames / rate:,.0f} s of audio ({frames:,} frames at {rate} Hz), more than the "
            f"limit of {max_seconds:,.0f} s; its header is probably corrupt. If the file really is that long, "
            "raise plugin.options.max_seconds"
        )


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
    mono, zeroed = _repair_nonfinite(np.ascontiguousarray(mono, dtype=np.float32), where)
    mono, normalised = _repair_peak(mono, where)
    if source_rate != sample_rate:
        mono = resample(mono, source_rate, sample_rate)
    return AudioClip(samples=mono, sample_rate=sample_rate, repairs=tuple(t for t in (zeroed, normalised) if t))


def resample(samples: np.ndarray, source_rate: int, sample_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr ('HQ'), mono float32 in and out."""
    import soxr

    if source_rate == sample_rate:
        return samples
    out = soxr.resample(samples, source_rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(out, dtype=np.float32)


def _repair_nonfinite(mono: np.ndarray, where: str) -> tuple[np.ndarray, str | None]:
    """Zero a few NaN/inf samples; reject clips where they are more than a glitch."""
    bad = ~np.isfinite(mono)
    count = int(bad.sum())
    if count == 0:
        return mono, None
    if count > MAX_NONFINITE_FRACTION * len(mono):
        raise DataError(
            f"{where} has {count} of {len(mono)} samples that are NaN or infinite "
            f"(more than {MAX_NONFINITE_FRACTION:.0%}); the file is corrupt"
        )
    log.warning("%s: zeroed %d non-finite samples", where, count)
    repaired = mono.copy()
    repaired[bad] = 0.0
    return repaired, NONFINITE_ZEROED


def _repair_peak(mono: np.ndarray, where: str) -> tuple[np.ndarray, str | None]:
    """Scale float audio beyond full scale down to a peak of 1.0 (shape kept; clipping would distort it)."""
    peak = float(np.max(np.abs(mono))) if len(mono) else 0.0
    if peak <= 1.0:
        return mono, None
    log.warning("%s: samples reach %.4g, beyond full scale 1.0; scaled by 1/%.4g", where, peak, peak)
    return mono / np.float32(peak), PEAK_NORMALISED
