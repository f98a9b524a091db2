"""What every audio encoder plugin shares: options, decoding, cropping, packing and SpecAugment.

A concrete plugin (BEATs, HTS-AT, AudioMAE) subclasses :class:`AudioEncoderPlugin` with its own options
class and supplies only the model-specific parts: ``featurize`` (its fbank flavour), ``new_encoder``,
``load_checkpoint`` and ``default_lora_targets``.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from pydantic import Field

from modbind.audio.crop import crop_or_pad
from modbind.audio.io import AUDIO_EXTENSIONS, DEFAULT_MAX_SECONDS, AudioClip, load_audio, to_clip
from modbind.audio.pcm import PCM16_FORMAT, pack_clip, unpack_clip
from modbind.audio.prompts import SOUND_TEMPLATES
from modbind.audio.specaugment import spec_augment
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin, PackedItem, Randomness
from modbind.errors import ConfigError, DataError, ModbindError

ConfigT = TypeVar("ConfigT", bound="ReplaceableConfig")


class ReplaceableConfig(Protocol):
    """An architecture config (frozen dataclass) whose ``replace`` validates the changed copy."""

    def replace(self: ConfigT, **changes: Any) -> ConfigT: ...


FBANK_WINDOW_SECONDS = 0.025
"""Kaldi fbank window (25 ms): a clip must have at least this much real audio to give one frame."""


class AudioEncoderOptions(EncoderOptions):
    """Options shared by audio encoders; the defaults are the paper's recipe."""

    sample_rate: int = Field(16000, gt=0)
    """Rate the encoder expects; every clip is resampled to it (the one source of truth for the rate)."""
    clip_seconds: float = Field(10.0, gt=0)
    """Length of the window each example is cropped or padded to."""
    random_truncation: bool = True
    """Training crop policy: random window / random onset (False: the eval policy also in training)."""
    spec_augment: bool = True
    """Apply SpecAugment to the fbank in training."""
    freq_mask: int = Field(48, ge=0)
    """Largest frequency-mask width F (mel bins)."""
    time_mask: int = Field(96, ge=0)
    """Largest time-mask width T (frames)."""
    n_freq_masks: int = Field(1, ge=0)
    n_time_masks: int = Field(1, ge=0)
    max_seconds: float = Field(DEFAULT_MAX_SECONDS, gt=0)
    """Longest audio a file may declare; a longer header is refused before decoding (the file is skipped)."""

    @property
    def clip_samples(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


AudioOptionsT = TypeVar("AudioOptionsT", bound=AudioEncoderOptions)


class AudioEncoderPlugin(EncoderPlugin[AudioOptionsT]):
    """Base of audio plugins: ``load_item`` -> AudioClip, ``preprocess`` -> fixed-length waveform + mask."""

    modality: ClassVar[str] = "audio"
    Options: ClassVar[type[EncoderOptions]] = AudioEncoderOptions
    file_extensions: ClassVar[tuple[str, ...]] = AUDIO_EXTENSIONS
    item_noun: ClassVar[str] = "clips"
    zeroshot_templates: ClassVar[Mapping[str, str]] = SOUND_TEMPLATES
    packed_format: ClassVar[str | None] = PCM16_FORMAT

    def load_item(self, path: Path, options: AudioOptionsT) -> AudioClip:
        """Decode, mix down and resample one file (DataError naming the file when it is unusable)."""
        return load_audio(Path(path), options.sample_rate, max_seconds=options.max_seconds)

    def as_item(self, value: Any, options: AudioOptionsT, **hints: Any) -> Any:
        """A waveform (numpy/torch, (N,) or (N, C)) recorded at ``sample_rate=`` becomes a clip at the
        encoder's rate; without ``sample_rate`` it is taken to be at the encoder's rate already."""
        sample_rate = hints.pop("sample_rate", None)
        if hints:
            raise ConfigError(f"audio items take only the hint sample_rate= (got {', '.join(hints)})")
        if sample_rate is None or isinstance(value, AudioClip):
            return value
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        return to_clip(np.asarray(value), int(sample_rate), options.sample_rate)

    def preprocess(self, item: Any, options: AudioOptionsT, *, train: bool,
                   generator: torch.Generator | None = None) -> Batch:
        """Crop/pad to ``clip_seconds``: ``{"waveform": (N,), "padding_mask": (N,) True = padding}``."""
        clip = as_clip(item, options.sample_rate)
        waveform, padding_mask = crop_or_pad(
            clip.samples,
            options.clip_samples,
            train=train and options.random_truncation,
            generator=generator,
            min_length=int(round(FBANK_WINDOW_SECONDS * options.sample_rate)),
        )
        return {"waveform": waveform, "padding_mask": padding_mask}

    @abc.abstractmethod
    def featurize(self, batch: Batch, options: AudioOptionsT) -> Batch:
        """``{"waveform", "padding_mask"}`` -> ``{"features": (B, T, F), "padding_mask": (B, T) True = pad}``."""

    def augment(self, features: Batch, options: AudioOptionsT, generator: Randomness = None) -> Batch:
        """SpecAugment on ``features["features"]`` (per example) when ``options.spec_augment`` is on."""
        if not options.spec_augment:
            return features
        out = dict(features)
        out["features"] = spec_augment(
            features["features"],
            freq_mask=options.freq_mask,
            time_mask=options.time_mask,
            n_freq_masks=options.n_freq_masks,
            n_time_masks=options.n_time_masks,
            padding_mask=features.get("padding_mask"),
            generator=generator,
        )
        return out

    def eval_policy(self, options: AudioOptionsT) -> str:
        return (f"deterministic: first {options.clip_seconds:g} s window of each clip (resampled to "
                f"{options.sample_rate} Hz), shorter clips right-padded with zeros and masked; no random crops")

    def pack_item(self, item: Any, options: AudioOptionsT, *, max_seconds: float | None = None) -> PackedItem:
        """The clip at the encoder's rate as int16 PCM (what ``modbind data pack`` stores)."""
        return pack_clip(as_clip(item, options.sample_rate), max_seconds)

    def unpack_item(self, packed: PackedItem, options: AudioOptionsT) -> AudioClip:
        return unpack_clip(packed)


def as_clip(item: Any, sample_rate: int) -> AudioClip:
    """Accept an AudioClip (resampled if needed) or a 1-D array already at ``sample_rate``."""
    if isinstance(item, AudioClip):
        if item.sample_rate == sample_rate:
            return item
        return to_clip(item.samples, item.sample_rate, sample_rate)
    if isinstance(item, (np.ndarray, torch.Tensor)):
        array = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else item
        return to_clip(array, sample_rate, sample_rate)
    raise DataError(f"audio plugins take an AudioClip, a file path or a 1-D array, got {type(item).__name__}")


def preset_with_overrides(preset: ConfigT, overrides: Mapping[str, Any] | None, owner: str) -> ConfigT:
    """The ``size`` preset changed by the ``config`` option; a change the config rejects is a ConfigError.

    The overrides come from the user's ``plugin.options``, so whatever the config raises (its own
    ValueError/CheckpointError, a TypeError for an unknown field) is reported as that option's fault.
    """
    if not overrides:
        return preset
    try:
        return preset.replace(**overrides)
    except (ValueError, TypeError, ModbindError) as err:
        raise ConfigError(f"plugin.options ({owner}): 'config': {err}") from None
