"""The AudioMAE encoder: timm's VisionTransformer on a one-channel 1024 x 128 fbank, mean-pooled.

timm's ViT with ``global_pool="avg"`` and ``fc_norm`` is the official ``models_vit.VisionTransformer``
(``global_pool=True``) layer for layer, with the same state-dict keys: blocks without a final ``norm``,
then ``fc_norm(mean of the patch tokens, cls excluded)``. Its patch embedding (a 16 x 16 stride-16 conv)
is the official ``PatchEmbed_new``. The backbone keeps the official key names, so official checkpoints
load into ``encoder.backbone`` unchanged.
"""

from __future__ import annotations

from functools import partial

import torch
from timm.layers import build_sincos2d_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn

from modbind.contracts import Batch, EncoderOutput, ModalityEncoder
from modbind_audio_mae.config import AudioMAEConfig


class AudioMAEEncoder(ModalityEncoder):
    """``{"features": (B, 1024, 128), "padding_mask": (B, 1024)}`` -> pooled (B, D) and patch tokens."""

    load_report: object | None = None
    """What the checkpoint loader used and ignored (``checkpoint.LoadReport``); None for a fresh model."""

    def __init__(self, config: AudioMAEConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.width = config.embed_dim
        self.backbone = VisionTransformer(
            img_size=(config.num_frames, config.num_mel_bins),
            patch_size=config.patch_size,
            in_chans=1,
            num_classes=config.num_classes,
            global_pool="avg",
            fc_norm=True,
            embed_dim=config.embed_dim,
            depth=config.depth,
            num_heads=config.num_heads,
            mlp_ratio=config.mlp_ratio,
            qkv_bias=config.qkv_bias,
            drop_path_rate=config.drop_path_rate,
            norm_layer=partial(nn.LayerNorm, eps=config.layer_norm_eps),
        )
        # The official models keep the (sin-cos) positions fixed; a fresh model gets the same kind.
        self.backbone.pos_embed.requires_grad_(False)
        with torch.no_grad():
            self.backbone.pos_embed.copy_(sincos_positions(config))

    def forward(self, features: Batch) -> EncoderOutput:
        fbank = features["features"]
        expected = (self.config.num_frames, self.config.num_mel_bins)
        if fbank.dim() != 3 or tuple(fbank.shape[1:]) != expected:
            raise ValueError(f"AudioMAE expects an fbank of shape (batch, {expected[0]}, {expected[1]}), "
                             f"got {tuple(fbank.shape)}; use the plugin's featurize()")
        hidden = self.hidden_states(fbank)
        pooled = self.backbone.forward_head(hidden, pre_logits=True)
        frame_mask = features.get("padding_mask")
        return EncoderOutput(
            pooled=pooled,
            tokens=hidden[:, self.backbone.num_prefix_tokens:],
            token_padding_mask=None if frame_mask is None else self.token_padding_mask(frame_mask),
        )

    def hidden_states(self, fbank: Tensor) -> Tensor:
        """Output of the last block, (B, 1 + patches, D), cls token first (no final norm, as official)."""
        weight = self.backbone.patch_embed.proj.weight
        return self.backbone.forward_features(fbank.unsqueeze(1).to(weight.dtype))

    def classify(self, features: Batch) -> Tensor:
        """AudioSet logits of a model built with ``num_classes > 0`` (the official fine-tuned head)."""
        if self.config.num_classes == 0:
            raise ValueError("this AudioMAE encoder has no classifier (num_classes is 0)")
        return self.backbone.forward_head(self.hidden_states(features["features"]))

    def token_padding_mask(self, frame_mask: Tensor) -> Tensor:
        """(B, frames) -> (B, patches): a patch is padding when all frames of its time row are."""
        time_patches, freq_patches = self.config.patch_grid
        rows = frame_mask.bool().reshape(frame_mask.shape[0], time_patches, self.config.patch_size).all(dim=-1)
        return rows.repeat_interleave(freq_patches, dim=1)

    def layers(self) -> list[nn.Module]:
        """The transformer blocks; the pooling norm travels with the last one (it reads only its output)."""
        blocks = list(self.backbone.blocks)
        return blocks[:-1] + [nn.ModuleList([blocks[-1], self.backbone.fc_norm])]

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.backbone.set_grad_checkpointing(enabled)


def sincos_positions(config: AudioMAEConfig) -> Tensor:
    """(1, 1 + patches, D) fixed 2-D sin-cos positions over the (time, frequency) patch grid; cls gets 0."""
    patches = build_sincos2d_pos_embed(list(config.patch_grid), dim=config.embed_dim)
    return torch.cat([torch.zeros(1, config.embed_dim), patches], dim=0)[None]
