"""The ``audio_htsat`` encoder plugin: HTS-AT on 32 kHz audio (48 kHz for LAION-CLAP towers), 10 s clips,
log-mel, SpecAugment.

Data path: ``load_item``/``preprocess`` come from :class:`~modbind.audio.base.AudioEncoderPlugin`
(decode, resample, random truncation in training, first 10 s + padding in evaluation); with the
``repeatpad`` policy ``preprocess`` first repeats a short clip like LAION-CLAP. ``featurize`` computes the
log-mel the checkpoint was trained on; with ``stretch`` it uses each example's real samples only and the
encoder stretches short examples to 1024 frames like the official forward (see
:mod:`modbind_audio_htsat.encoder` for the policies).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import Tensor

import modbind
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin, as_clip
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin, Randomness
from modbind.pretrained import PretrainedCheckpoint

from modbind_audio_htsat.architecture import LAION_CLAP_SAMPLE_RATE, PRESETS, PresetName, ShortClipPolicy
from modbind_audio_htsat.frontend import FrontEndParams, MelScale, log_mel, mel_filterbank
from modbind_audio_htsat.pretrained import CHECKPOINTS

if TYPE_CHECKING:  # transformers loads on first use, so listing plugins stays fast
    from modbind_audio_htsat.encoder import HtsatEncoder


class HtsatOptions(AudioEncoderOptions):
    """HTS-AT options. With ``checkpoint`` set, the architecture comes from the checkpoint's shapes."""

    sample_rate: int = Field(32000, gt=0)
    """32000 for official HTS-AT weights, 48000 for LAION-CLAP towers (the hop is always 10 ms)."""
    architecture: PresetName = "audioset"
    """Size built without a checkpoint: the official AudioSet Swin-T (also LAION-CLAP's HTSAT-tiny),
    LAION-CLAP's HTSAT-base, or the tiny conformance model."""
    short_clips: ShortClipPolicy = "stretch"
    """How clips under ``clip_seconds`` are fitted. ``stretch``: stretched to the full length (official
    HTS-AT forward); ``pad``: zero-padded (official AudioSet training data); ``repeatpad``: repeated as
    often as it fits, then zero-padded (LAION-CLAP). Unset: ``repeatpad`` at 48 kHz (LAION-CLAP towers),
    ``stretch`` otherwise."""
    mel_scale: MelScale = "slaney"
    """The mel filterbank the checkpoint was trained on: ``slaney`` (official HTS-AT, non-fused LAION-CLAP)
    or ``htk`` (fused LAION-CLAP towers: HTK scale, no area normalisation). The loader refuses a mismatch."""
    drop_path_rate: float = Field(0.1, ge=0.0, lt=1.0)
    """Stochastic depth in training (official HTS-AT: 0.1)."""

    @model_validator(mode="after")
    def _fits_the_model(self) -> HtsatOptions:
        if "short_clips" not in self.model_fields_set:
            self.short_clips = "repeatpad" if self.sample_rate == LAION_CLAP_SAMPLE_RATE else "stretch"
        params = FrontEndParams.for_rate(self.sample_rate)
        if self.sample_rate <= 2 * params.fmax:
            raise ValueError(f"sample_rate {self.sample_rate} Hz is too low for HTS-AT's mel bands up to "
                             f"{params.fmax:g} Hz; use 32000 (official) or 48000 (LAION-CLAP)")
        target = PRESETS[self.architecture].target_frames
        if params.frames(self.clip_samples) > target:
            longest = (target * params.hop_length - 1) / self.sample_rate
            raise ValueError(f"clip_seconds {self.clip_seconds:g} gives {params.frames(self.clip_samples)} "
                             f"log-mel frames; HTS-AT takes at most {target} (clip_seconds <= {longest:.4f})")
        if self.clip_samples < params.min_samples:
            raise ValueError(f"clip_seconds {self.clip_seconds:g} is shorter than one {params.n_fft}-sample STFT window")
        return self


class HtsatPlugin(AudioEncoderPlugin[HtsatOptions]):
    """HTS-AT (official AudioSet checkpoints or LAION-CLAP audio towers) as a modbind audio encoder."""

    name: ClassVar[str] = "audio_htsat"
    Options: ClassVar[type[EncoderOptions]] = HtsatOptions
    default_lora_targets: ClassVar[tuple[str, ...]] = ("query", "key", "value", "dense")
    """Attention projections and both MLP layers (``attention.output.dense``, ``intermediate.dense``,
    ``output.dense``) of every Swin block."""
    pretrained: ClassVar[Mapping[str, PretrainedCheckpoint]] = CHECKPOINTS
    """Until ``short_clips: repeatpad`` exists, LAION-CLAP entries leave the short-clip policy at its default."""

    def preprocess(self, item: Any, options: HtsatOptions, *, train: bool,
                   generator: torch.Generator | None = None) -> Batch:
        """The shared crop/pad; with ``repeatpad`` a short clip is first repeated ``clip_samples // n`` times
        (LAION-CLAP's ``repeatpad``), so only the remainder is zero padding."""
        if options.short_clips == "repeatpad":
            item = repeat_to_fill(as_clip(item, options.sample_rate).samples, options.clip_samples)
        return super().preprocess(item, options, train=train, generator=generator)

    def featurize(self, batch: Batch, options: HtsatOptions) -> Batch:
        """``{"features": (B, T, 64) dB log-mel, "padding_mask": (B, T)}``, T = 1 + samples // hop.

        With the ``stretch`` policy each example's log-mel is computed from its real samples only, so the
        last frames see reflect padding of the clip itself, exactly as when the official model is given
        the short clip; padded frames hold silence (-100 dB) and are marked in the mask. With ``pad`` and
        ``repeatpad`` the log-mel of the whole window is used, as LAION-CLAP and the AudioSet data did.
        """
        params = FrontEndParams.for_rate(options.sample_rate, options.mel_scale)
        waveform = batch["waveform"].float()
        mel_matrix = _mel_matrix(params).to(waveform.device)
        frames = params.frames(waveform.shape[1])
        real = _real_samples(batch.get("padding_mask"), waveform)
        real_frames = torch.tensor([params.frames(n) for n in real], device=waveform.device)
        frame_mask = torch.arange(frames, device=waveform.device)[None, :] >= real_frames[:, None]
        if options.short_clips != "stretch" or all(n == waveform.shape[1] for n in real):
            return {"features": log_mel(waveform, params, mel_matrix), "padding_mask": frame_mask}
        silence = 10.0 * math.log10(params.amin)
        features = torch.full((waveform.shape[0], frames, params.n_mels), silence, device=waveform.device)
        for length in sorted(set(real)):
            rows = [i for i, n in enumerate(real) if n == length]
            samples = max(length, params.min_samples)
            mel = log_mel(waveform[rows, :samples], params, mel_matrix)
            features[rows, : mel.shape[1]] = mel[:, :frames]
        return {"features": features, "padding_mask": frame_mask}

    def augment(self, features: Batch, options: HtsatOptions, generator: Randomness = None) -> Batch:
        """The shared SpecAugment, filling masked cells with the example's mean level of that mel bin.

        HTS-AT's features are raw dB (bn0 is part of the model), where the shared fill value 0 would be a
        loud 0 dB stripe; the official SpecAugmentation fills 0 *after* bn0, i.e. the average level.
        """
        if not options.spec_augment:
            return features
        level = _mean_level(features["features"], features.get("padding_mask"))
        out = super().augment({**features, "features": features["features"] - level}, options, generator)
        out["features"] = out["features"] + level
        return out

    def new_encoder(self, options: HtsatOptions) -> HtsatEncoder:
        from modbind_audio_htsat.encoder import HtsatEncoder
        from modbind_audio_htsat.init import init_like_official

        encoder = HtsatEncoder(PRESETS[options.architecture], short_clips=options.short_clips,
                               drop_path_rate=options.drop_path_rate)
        init_like_official(encoder.model)
        return encoder

    def load_checkpoint(self, path: Path, options: HtsatOptions) -> HtsatEncoder:
        from modbind_audio_htsat.checkpoint import load_htsat_checkpoint

        return load_htsat_checkpoint(Path(path), sample_rate=options.sample_rate, mel_scale=options.mel_scale,
                                     short_clips=options.short_clips, drop_path_rate=options.drop_path_rate)


@functools.lru_cache(maxsize=4)
def _mel_matrix(params: FrontEndParams) -> Tensor:
    return mel_filterbank(params)


def repeat_to_fill(samples: np.ndarray, length: int) -> np.ndarray:
    """``samples`` repeated ``length // len(samples)`` times (LAION-CLAP ``repeatpad``, before its zero
    padding); clips of ``length`` or more samples are returned unchanged."""
    if 0 < len(samples) < length:
        return np.tile(samples, length // len(samples))
    return samples


def _real_samples(padding_mask: Tensor | None, waveform: Tensor) -> list[int]:
    """Unpadded length of each example (padding is always at the end)."""
    if padding_mask is None:
        return [waveform.shape[1]] * waveform.shape[0]
    return (~padding_mask.bool()).sum(dim=1).tolist()


def _mean_level(features: Tensor, padding_mask: Tensor | None) -> Tensor:
    """(B, 1, F): mean over each example's real frames."""
    if padding_mask is None:
        return features.mean(dim=1, keepdim=True)
    real = (~padding_mask.bool()).unsqueeze(-1).to(features.dtype)
    return (features * real).sum(dim=1, keepdim=True) / real.sum(dim=1, keepdim=True).clamp(min=1.0)


@modbind.hookimpl
def register_encoders(register: Callable[[EncoderPlugin[Any]], None]) -> None:
    register(HtsatPlugin())
