"""The ``audio_mae`` encoder plugin: AudioMAE (ViT-B/16) on the AudioMAE Kaldi fbank of 16 kHz audio.

Decoding, cropping and SpecAugment come from :class:`modbind.audio.base.AudioEncoderPlugin`; the fbank
(mean removal, hanning window, 1024 frames, AudioSet normalisation) from :mod:`modbind.audio.fbank`.
This module adds only the AudioMAE-specific parts: featurize, the encoder, its checkpoint loader.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

import modbind
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin, narrow_options, preset_with_overrides
from modbind.audio.fbank import AUDIOMAE_FBANK, frame_padding_mask, kaldi_fbank
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin
from modbind_audio_mae.config import PRESETS, AudioMAEConfig

if TYPE_CHECKING:  # timm loads on first use, so listing plugins stays fast
    from modbind_audio_mae.model import AudioMAEEncoder


class AudioMAEOptions(AudioEncoderOptions):
    """AudioMAE options. The architecture comes from ``size``/``config``; a checkpoint must match it, and
    its head count comes from the file's stored config or, when it has none, from ``num_heads``."""

    size: Literal["base", "tiny"] = "base"
    """'base': ViT-B/16 of the released checkpoints; 'tiny': width 64, 2 blocks (tests, demos)."""
    config: dict[str, Any] | None = None
    """AudioMAEConfig fields overriding ``size``, e.g. ``{"num_classes": 527}`` to keep the AudioSet head."""
    num_heads: int | None = Field(None, gt=0)
    """Attention heads per block. The weights do not record it, so with a checkpoint that stores no config
    it is required (12 for the official ViT-B/16 checkpoints); one that contradicts the file's stored
    config is an error. Without a checkpoint it overrides the ``size`` preset (None: the preset's)."""
    pretrained_pool_norm: Literal["copy", "fresh"] = "copy"
    """With the pre-trained MAE checkpoint (no ``fc_norm``): start the pooling norm from the MAE's final
    ``norm`` ('copy') or at identity like the official fine-tuning ('fresh')."""

    @model_validator(mode="after")
    def _fits_audiomae_input(self) -> "AudioMAEOptions":
        if self.sample_rate != AUDIOMAE_FBANK.sample_rate:
            raise ValueError(f"AudioMAE works on {AUDIOMAE_FBANK.sample_rate} Hz audio; "
                             f"sample_rate {self.sample_rate} is not supported")
        longest = max_clip_seconds()
        if self.clip_seconds > longest:
            raise ValueError(f"AudioMAE sees {AUDIOMAE_FBANK.target_frames} fbank frames ({longest:.3f} s); "
                             f"clip_seconds {self.clip_seconds} would be cut silently, use at most {longest:.3f}")
        return self

    @model_validator(mode="after")
    def _heads_fit_the_width(self) -> "AudioMAEOptions":
        overrides = self.config or {}
        in_config = overrides.get("num_heads")
        if self.num_heads is not None and in_config is not None and in_config != self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} contradicts config.num_heads {in_config}; set only one")
        width = overrides.get("embed_dim", PRESETS[self.size].embed_dim)
        if self.num_heads is not None and isinstance(width, int) and width % self.num_heads:
            raise ValueError(f"num_heads {self.num_heads} does not divide embed_dim {width} "
                             f"(size '{self.size}'{' and config' if 'embed_dim' in overrides else ''})")
        return self

    def requested_num_heads(self) -> int | None:
        """The head count the user gave (``num_heads`` or ``config.num_heads``), None when neither is set."""
        return self.num_heads if self.num_heads is not None else (self.config or {}).get("num_heads")

    def architecture(self) -> AudioMAEConfig:
        """The config ``size`` names, with ``config`` and ``num_heads`` applied (ConfigError when invalid)."""
        overrides = {**(self.config or {}), **({"num_heads": self.num_heads} if self.num_heads is not None else {})}
        return preset_with_overrides(PRESETS[self.size], overrides, AudioMAEPlugin.name)


def max_clip_seconds() -> float:
    """Longest clip whose frames all fit the 1024-frame input: (1024 - 1) hops plus one window."""
    params = AUDIOMAE_FBANK
    samples = (params.target_frames - 1) * params.shift_samples + params.window_samples
    return samples / params.sample_rate


class AudioMAEPlugin(AudioEncoderPlugin):
    """AudioMAE (pre-trained MAE encoder or AudioSet fine-tuned) as a modbind audio encoder."""

    name: ClassVar[str] = "audio_mae"
    Options: ClassVar[type[EncoderOptions]] = AudioMAEOptions
    default_lora_targets: ClassVar[tuple[str, ...]] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    """Attention and MLP linears of every block (``attn.proj``, so the patch-embedding conv is not hit)."""

    def featurize(self, batch: Batch, options: EncoderOptions) -> Batch:
        """Official AudioMAE fbank (B, 1024, 128) and its frame padding mask (B, 1024), True = padding."""
        waveform = batch["waveform"].float()
        sample_mask = batch.get("padding_mask")
        fbank = kaldi_fbank(waveform, params=AUDIOMAE_FBANK, padding_mask=sample_mask)
        if sample_mask is None:
            frame_mask = torch.zeros(fbank.shape[:2], dtype=torch.bool, device=fbank.device)
        else:
            frame_mask = frame_padding_mask(sample_mask.to(fbank.device), fbank.shape[1], AUDIOMAE_FBANK)
        return {"features": fbank, "padding_mask": frame_mask}

    def build_encoder(self, options: EncoderOptions) -> AudioMAEEncoder:
        from modbind_audio_mae.model import AudioMAEEncoder

        opts = narrow_options(options, AudioMAEOptions, self.name)
        if opts.checkpoint is not None:
            return self.load_checkpoint(opts.checkpoint, opts)
        encoder = AudioMAEEncoder(opts.architecture())
        encoder.set_gradient_checkpointing(opts.gradient_checkpointing)
        return encoder

    def load_checkpoint(self, path: Path, options: EncoderOptions) -> AudioMAEEncoder:
        from modbind_audio_mae.checkpoint import load_audiomae_checkpoint

        opts = narrow_options(options, AudioMAEOptions, self.name)
        encoder = load_audiomae_checkpoint(Path(path), opts.architecture(), num_heads=opts.requested_num_heads(),
                                           pool_norm=opts.pretrained_pool_norm)
        encoder.set_gradient_checkpointing(opts.gradient_checkpointing)
        return encoder


@modbind.hookimpl
def register_encoders(register: Callable[[EncoderPlugin], None]) -> None:
    register(AudioMAEPlugin())
