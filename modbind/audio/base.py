"""What every audio encoder plugin shares: options, decoding, cropping and SpecAugment.

A concrete plugin (BEATs, HTS-AT, AudioMAE) subclasses :class:`AudioEncoderPlugin` and supplies only the
model-specific parts: ``featurize`` (its fbank flavour), ``build_encoder``, ``load_checkpoint`` and
``default_lora_targets``.
"""

from __future__ import annotations

import abc
from pathlib import Path
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol, TypeVar

import numpy as np
import torch
from pydantic import Field

from modbind.audio.crop import crop_or_pad
from modbind.audio.io import AUDIO_EXTENSIONS, DEFAULT_MAX_SECONDS, AudioClip, load_audio, to_clip
from modbind.audio.specaugment import spec_augment
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin, ModalityEncoder
from modbind.errors import ConfigError, DataError, ModbindError

OptionsT = TypeVar("OptionsT", bound=EncoderOptions)
ConfigT = TypeVar("ConfigT", bound="ReplaceableConfig")


class ReplaceableConfig(Protocol):
    """An architecture config (frozen dataclass) whose ``replace`` validates the changed copy."""

    def replace(self: ConfigT, **changes: Any) -> ConfigT: ...

FBANK_WINDOW_SECONDS = 0.025
"""Kaldi fbank window (25 ms): a clip must have at least this much real audio to give one frame."""


class AudioEncoderOptions(EncoderOptions):
    """Options shared by audio encoders; the defaults are the paper's recipe."""

    sample_rate: int = Field(16000, gt=0)
    """Rate the encoder expects; every clip is resampled to it."""
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


class AudioEncoderPlugin(EncoderPlugin):
    """Base of audio plugins: ``load_item`` -> AudioClip, ``preprocess`` -> fixed-length waveform + mask."""

    modality: ClassVar[str] = "audio"
    Options: ClassVar[type[EncoderOptions]] = AudioEncoderOptions
    file_extensions: ClassVar[tuple[str, ...]] = AUDIO_EXTENSIONS

    def load_item(self, path: Path, options: EncoderOptions) -> AudioClip:
        """Decode, mix down and resample one file (DataError naming the file when it is unusable)."""
        opts = _audio(options)
        return load_audio(Path(path), opts.sample_rate, max_seconds=opts.max_seconds)

    def preprocess(
        self, item: Any, options: EncoderOptions, *, train: bool, generator: torch.Generator | None = None
    ) -> Batch:
        """Crop/pad to ``clip_seconds``: ``{"waveform": (N,), "padding_mask": (N,) True = padding}``."""
        opts = _audio(options)
        clip = as_clip(item, opts.sample_rate)
        waveform, padding_mask = crop_or_pad(
            clip.samples,
            opts.clip_samples,
            train=train and opts.random_truncation,
            generator=generator,
            min_length=int(round(FBANK_WINDOW_SECONDS * opts.sample_rate)),
        )
        return {"waveform": waveform, "padding_mask": padding_mask}

    @abc.abstractmethod
    def featurize(self, batch: Batch, options: EncoderOptions) -> Batch:
        """``{"waveform", "padding_mask"}`` -> ``{"features": (B, T, F), "padding_mask": (B, T) True = pad}``."""

    def augment(self, features: Batch, options: EncoderOptions, generator: torch.Generator | None = None) -> Batch:
        """SpecAugment on ``features["features"]`` (per example) when ``options.spec_augment`` is on."""
        opts = _audio(options)
        if not opts.spec_augment:
            return features
        out = dict(features)
        out["features"] = spec_augment(
            features["features"],
            freq_mask=opts.freq_mask,
            time_mask=opts.time_mask,
            n_freq_masks=opts.n_freq_masks,
            n_time_masks=opts.n_time_masks,
            padding_mask=features.get("padding_mask"),
            generator=generator,
        )
        return out

    @abc.abstractmethod
    def build_encoder(self, options: EncoderOptions) -> ModalityEncoder:
        """The encoder, from ``options.checkpoint`` when set."""

    @abc.abstractmethod
    def load_checkpoint(self, path: Path, options: EncoderOptions) -> ModalityEncoder:
        """The encoder built from an official checkpoint."""


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


def narrow_options(options: EncoderOptions, expected: type[OptionsT], owner: str) -> OptionsT:
    """``options`` as the type ``owner`` declared: the contract passes the base EncoderOptions around.

    A mismatch is a caller bug (options built by another plugin), hence TypeError rather than ConfigError.
    """
    if not isinstance(options, expected):
        raise TypeError(f"{owner}: expected {expected.__name__}, got {type(options).__name__}")
    return options


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


def _audio(options: EncoderOptions) -> AudioEncoderOptions:
    return narrow_options(options, AudioEncoderOptions, "audio plugins")
