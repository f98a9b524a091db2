"""Audio in packed shards: int16 PCM bytes plus the rate, what ``modbind data pack`` stores per clip.

Decoding FLAC/MP3 and resampling costs milliseconds per clip; turning int16 PCM back into floats costs
microseconds. The audio plugins pack and unpack clips with these two functions.
"""

from __future__ import annotations

import numpy as np

from modbind.audio.io import AudioClip
from modbind.contracts import PackedItem
from modbind.errors import DataError

PCM16_FORMAT = "pcm16"
"""The packed format name audio plugins declare (``EncoderPlugin.packed_format``)."""
PCM_SCALE = 32768.0


def encode_pcm16(samples: np.ndarray) -> bytes:
    """Float samples in [-1, 1] → little-endian int16 bytes (clipped, rounded)."""
    scaled = np.clip(np.rint(np.asarray(samples, dtype=np.float32) * PCM_SCALE), -32768, 32767)
    return scaled.astype("<i2").tobytes()


def decode_pcm16(data: bytes) -> np.ndarray:
    """Little-endian int16 bytes → float32 samples (the inverse of :func:`encode_pcm16` up to rounding)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) * np.float32(1.0 / PCM_SCALE)


def pack_clip(clip: AudioClip, max_seconds: float | None = None) -> PackedItem:
    """A clip (optionally only its first ``max_seconds``) as int16 PCM with its rate and length."""
    samples = clip.samples
    if max_seconds is not None:
        samples = samples[: int(round(max_seconds * clip.sample_rate))]
    return PackedItem(encode_pcm16(samples), {"sample_rate": clip.sample_rate, "num_samples": len(samples)})


def unpack_clip(packed: PackedItem) -> AudioClip:
    """The clip :func:`pack_clip` stored; a length that disagrees with the header is a DataError."""
    data, meta = packed.data, packed.meta
    try:
        sample_rate, expected = int(meta["sample_rate"]), int(meta["num_samples"])
    except (KeyError, TypeError, ValueError) as err:
        raise DataError(f"packed clip header lacks sample_rate/num_samples ({err}); re-pack the shards") from None
    if not data or len(data) % 2 or len(data) // 2 != expected:
        raise DataError(f"packed clip has {len(data)} PCM bytes, expected {expected} samples; the shard is damaged")
    return AudioClip(samples=decode_pcm16(data), sample_rate=sample_rate)
