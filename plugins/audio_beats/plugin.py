"""The ``audio_beats`` encoder plugin: BEATs on 16 kHz audio, 10 s clips, Kaldi fbank, SpecAugment."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator

import modbind
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin, narrow_options, preset_with_overrides
from modbind.audio.fbank import BEATS_FBANK, kaldi_fbank
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin
from modbind_audio_beats.attention import AttentionChoice
from modbind_audio_beats.checkpoint import load_beats_checkpoint
from modbind_audio_beats.config import PRESETS
from modbind_audio_beats.model import BeatsEncoder, coarsen_padding_mask


class BeatsOptions(AudioEncoderOptions):
    """BEATs options. With ``checkpoint`` set the architecture comes from the checkpoint's cfg."""

    size: Literal["base", "tiny"] = "base"
    """Architecture built when there is no checkpoint: the released base cfg or a 2-layer tiny one."""
    config: dict[str, Any] | None = None
    """Official cfg keys overriding ``size`` (e.g. ``{"encoder_layers": 4}``); ignored with a checkpoint."""
    layerdrop: float | None = Field(None, ge=0.0, lt=1.0)
    """Override the cfg's ``encoder_layerdrop`` (0.05 in released checkpoints); None keeps it."""
    attention: AttentionChoice = "auto"
    """Attention kernel: ``sdpa`` (gated bias as an additive mask), ``flex`` (FlexAttention adds it in a
    fused kernel; trains on CUDA only) or ``auto`` (flex on CUDA, sdpa elsewhere). Same outputs."""

    @model_validator(mode="after")
    def _sixteen_khz(self) -> "BeatsOptions":
        if self.sample_rate != BEATS_FBANK.sample_rate:
            raise ValueError(f"BEATs works on {BEATS_FBANK.sample_rate} Hz audio; sample_rate {self.sample_rate} is not supported")
        return self


class BeatsPlugin(AudioEncoderPlugin):
    """BEATs (iter3 / iter3+, pre-trained or AudioSet fine-tuned) as a modbind audio encoder."""

    name: ClassVar[str] = "audio_beats"
    Options: ClassVar[type[EncoderOptions]] = BeatsOptions
    default_lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")

    def featurize(self, batch: Batch, options: EncoderOptions) -> Batch:
        """Normalised BEATs fbank (B, T, 128) and the official frame padding mask (B, T)."""
        waveform = batch["waveform"]
        fbank = kaldi_fbank(waveform.float(), params=BEATS_FBANK)
        sample_mask = batch.get("padding_mask")
        if sample_mask is None:
            frame_mask = torch.zeros(fbank.shape[:2], dtype=torch.bool, device=fbank.device)
        else:
            frame_mask = coarsen_padding_mask(sample_mask.bool(), fbank.shape[1])
        return {"features": fbank, "padding_mask": frame_mask}

    def build_encoder(self, options: EncoderOptions) -> BeatsEncoder:
        opts = narrow_options(options, BeatsOptions, self.name)
        if opts.checkpoint is not None:
            return self.load_checkpoint(opts.checkpoint, opts)
        config = preset_with_overrides(PRESETS[opts.size], opts.config, self.name)
        return _configure(BeatsEncoder(config), opts)

    def load_checkpoint(self, path: Path, options: EncoderOptions) -> BeatsEncoder:
        opts = narrow_options(options, BeatsOptions, self.name)
        return _configure(load_beats_checkpoint(Path(path)), opts)


def _configure(model: BeatsEncoder, options: BeatsOptions) -> BeatsEncoder:
    if options.layerdrop is not None:
        model.encoder.layerdrop = options.layerdrop
    model.set_gradient_checkpointing(options.gradient_checkpointing)
    model.set_attention(options.attention)
    return model


@modbind.hookimpl
def register_encoders(register: Callable[[EncoderPlugin], None]) -> None:
    register(BeatsPlugin())
