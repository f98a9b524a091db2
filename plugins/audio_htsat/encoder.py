"""The HTS-AT encoder: transformers' ``ClapAudioModel`` behind modbind's ``ModalityEncoder`` contract.

``ClapAudioModel`` takes the dB log-mel ``(B, 1, T, 64)`` and itself applies bn0 (over mel bins), the
bicubic ``align_corners=True`` stretch to 1024 frames, the fold into a 256x256 image, the Swin stages, the
final LayerNorm, the regrouping into ``feature_map (B, C, 2, 32)`` and the mean that gives the official
``latent_output`` (our ``pooled``).

Short clips: the official forward stretches a clip of fewer than 1024 frames to 1024 frames; it never
sees padding. With ``short_clips="stretch"`` (default) each example's real frames (the padding mask says
which) are stretched to the full length, in training and evaluation alike. When no example of a batch is
padded, the features go to ``ClapAudioModel`` untouched, which is exactly the official order (bn0, then
stretch); otherwise every example is stretched here first and bn0 follows, which in evaluation differs from
the official order only by float rounding (bn0 is a per-bin affine map and bicubic weights sum to 1).
``short_clips="pad"`` feeds the padded 10 s log-mel instead, as the official AudioSet training data did;
``"repeatpad"`` does the same with a window the plugin's ``preprocess`` filled by repeating the clip
(LAION-CLAP). Both mark feature-map steps that cover only padding in ``token_padding_mask``.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from modbind.contracts import Batch, EncoderOutput, ModalityEncoder

from modbind_audio_htsat.architecture import HtsatArchitecture, ShortClipPolicy


class HtsatEncoder(ModalityEncoder):
    """HTS-AT (Swin-T over a folded log-mel); ``pooled`` is the official ``latent_output``."""

    def __init__(self, architecture: HtsatArchitecture, *, short_clips: ShortClipPolicy = "stretch",
                 drop_path_rate: float = 0.0):
        super().__init__()
        from transformers import ClapAudioModel

        self.architecture = architecture
        self.short_clips: ShortClipPolicy = short_clips
        self.width = architecture.width
        self.model = ClapAudioModel(architecture.to_clap_config(drop_path_rate=drop_path_rate))

    @property
    def body(self) -> nn.Module:
        """The ``ClapAudioEncoder`` (bn0, patch embedding, stages, final norm)."""
        return self.model.audio_encoder

    def forward(self, features: Batch) -> EncoderOutput:
        """``{"features": (B, T, mel) dB log-mel, "padding_mask": (B, T) True = pad}`` -> pooled (B, width).

        ``tokens`` are the 32 time steps of the feature map (mean over its 2 frequency rows), in order.
        """
        mel = features["features"]
        padding_mask = features.get("padding_mask")
        if mel.dim() != 3 or mel.shape[-1] != self.architecture.mel_bins:
            raise ValueError(f"HTS-AT expects (batch, frames, {self.architecture.mel_bins}) log-mel features, "
                             f"got shape {tuple(mel.shape)}")
        if mel.shape[1] > self.architecture.target_frames:
            raise ValueError(f"HTS-AT takes at most {self.architecture.target_frames} frames per example, got "
                             f"{mel.shape[1]}; shorten clip_seconds")
        token_padding = None
        if padding_mask is not None and bool(padding_mask.any()):
            if self.short_clips == "stretch":
                mel = self._stretch_real_frames(mel, padding_mask)
            else:
                token_padding = self._token_padding(padding_mask)
        out = self.model(input_features=mel.unsqueeze(1))
        feature_map = out.last_hidden_state  # (B, C, c_freq_bin, time steps)
        tokens = feature_map.mean(dim=2).transpose(1, 2)
        return EncoderOutput(pooled=out.pooler_output, tokens=tokens, token_padding_mask=token_padding)

    def _stretch_real_frames(self, mel: Tensor, padding_mask: Tensor) -> Tensor:
        """Each example's unpadded frames, bicubically stretched to the model's full length (official rule)."""
        target = self.architecture.target_frames
        real = (~padding_mask.bool()).sum(dim=1).clamp(min=1).tolist()
        stretched = [
            F.interpolate(example[None, None, :length], size=(target, mel.shape[-1]), mode="bicubic",
                          align_corners=True)[0, 0]
            for example, length in zip(mel, real)
        ]
        return torch.stack(stretched)

    def _token_padding(self, padding_mask: Tensor) -> Tensor:
        """(B, steps): True where a feature-map time step covers only padded frames (``pad``, ``repeatpad``)."""
        arch = self.architecture
        frames = padding_mask.shape[1]
        real = (~padding_mask.bool()).sum(dim=1, keepdim=True)
        # first stretched frame of each step, mapped back to the unstretched time axis (align_corners=True)
        starts = torch.arange(arch.time_steps, device=padding_mask.device) * (arch.target_frames // arch.time_steps)
        source = starts.to(torch.float32) * (frames - 1) / (arch.target_frames - 1)
        return source[None, :] >= real

    def layers(self) -> list[nn.Module]:
        """Stem (bn0 + patch embedding), then every Swin block in order; a stage's patch merging travels
        with its last block and the final LayerNorm with the very last block, so the top k always form a
        closed sub-network."""
        body = self.body
        units: list[nn.Module] = [nn.ModuleList([body.batch_norm, body.patch_embed])]
        for stage in body.layers:
            blocks = list(stage.blocks)
            for block in blocks[:-1]:
                units.append(block)
            tail = [blocks[-1]] + ([stage.downsample] if stage.downsample is not None else [])
            units.append(nn.ModuleList(tail) if len(tail) > 1 else tail[0])
        last = units.pop()
        units.append(nn.ModuleList([last, body.norm]))
        return units

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Recompute each Swin stage in backward (transformers' ``GradientCheckpointingLayer`` hook)."""
        for stage in self.body.layers:
            stage.gradient_checkpointing = enabled
            stage._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
