"""The ``audio_beats`` encoder plugin: BEATs on 16 kHz audio, 10 s clips, Kaldi fbank, SpecAugment."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

import modbind
from modbind.audio.base import AudioEncoderOptions, AudioEncoderPlugin, preset_with_overrides
from modbind.contracts import Batch, EncoderOptions, EncoderPlugin
from modbind.pretrained import PretrainedCheckpoint
from modbind_audio_beats.attention import AttentionChoice
from modbind_audio_beats.checkpoint import load_beats_checkpoint
from modbind_audio_beats.config import PRESETS
from modbind_audio_beats.frontend import SAMPLE_RATE, beats_features
from modbind_audio_beats.model import BeatsEncoder
from modbind_audio_beats.pretrained import CHECKPOINTS


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
    def _sixteen_khz(self) -> BeatsOptions:
        if self.sample_rate != SAMPLE_RATE:
            raise ValueError(f"BEATs works on {SAMPLE_RATE} Hz audio; sample_rate {self.sample_rate} is not supported")
        return self


class BeatsPlugin(AudioEncoderPlugin[BeatsOptions]):
    """BEATs (iter3 / iter3+, pre-trained or AudioSet fine-tuned) as a modbind audio encoder."""

    name: ClassVar[str] = "audio_beats"
    Options: ClassVar[type[EncoderOptions]] = BeatsOptions
    default_lora_targets: ClassVar[tuple[str, ...]] = ("q_proj", "k_proj", "v_proj", "out_proj")
    pretrained: ClassVar[Mapping[str, PretrainedCheckpoint]] = CHECKPOINTS

    def featurize(self, batch: Batch, options: BeatsOptions) -> Batch:
        """Normalised BEATs fbank (B, T, 128) and the official frame padding mask (B, T)."""
        return beats_features(batch, options.sample_rate)

    def build_encoder(self, options: BeatsOptions) -> BeatsEncoder:
        encoder = super().build_encoder(options)
        if options.layerdrop is not None:
            encoder.encoder.layerdrop = options.layerdrop
        encoder.set_attention(options.attention)
        return encoder

    def new_encoder(self, options: BeatsOptions) -> BeatsEncoder:
        return BeatsEncoder(preset_with_overrides(PRESETS[options.size], options.config, self.name))

    def load_checkpoint(self, path: Path, options: BeatsOptions) -> BeatsEncoder:
        return load_beats_checkpoint(Path(path))


@modbind.hookimpl
def register_encoders(register: Callable[[EncoderPlugin[Any]], None]) -> None:
    register(BeatsPlugin())
