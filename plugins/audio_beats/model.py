"""BEATs (Chen et al., 2022) written for modbind: same parameters and outputs as Microsoft's code.

Module and parameter names mirror the official ``BEATs`` / ``TransformerEncoder`` so an official
``state_dict`` loads strictly. Differences are in *how*, never *what*:

* attention runs through fused kernels (:mod:`modbind_audio_beats.attention`). The official code
  computes ``softmax((q·k·s - rowmax) + gate * bias)`` with -inf on padded keys; the row max is a
  constant per softmax row, so the same probabilities come from SDPA with the gated relative-position
  bias (plus a large negative value on padded keys) as an additive float mask, or from FlexAttention
  adding the gated bias in a ``score_mod`` with the padded keys in a block mask;
* the relative-position bias is computed once per forward and shared by all layers (the official code
  shares one embedding between the layers and passes the bias from layer to layer, which is the same
  thing); the state_dict still lists the table under every layer, as copies;
* gradient checkpointing per layer and :meth:`BeatsEncoder.layers` for partial fine-tuning.

Input is the normalised BEATs fbank (B, T, 128) with a frame padding mask; patches are 16x16 fbank
tiles, ordered time-major (8 frequency patches per 16 frames).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from modbind.contracts import Batch, EncoderOutput, ModalityEncoder
from modbind_audio_beats.attention import AttentionChoice, AttentionInputs, attend, resolve_kernel
from modbind_audio_beats.config import BeatsConfig


def coarsen_padding_mask(padding_mask: Tensor, length: int) -> Tensor:
    """The official ``forward_padding_mask``: fold a (B, N) mask into (B, length) chunks, True if all padding.

    Trailing entries that do not fill a whole chunk are dropped, exactly as BEATs does (this is how the
    official code goes from samples to frames and from frames to patches).
    """
    extra = padding_mask.size(1) % length
    if extra > 0:
        padding_mask = padding_mask[:, :-extra]
    return padding_mask.reshape(padding_mask.size(0), length, -1).all(-1)


class _GradMultiply(torch.autograd.Function):
    """Identity forward, gradient scaled in backward (the official layer-wise gradient decay)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # type: ignore[override]
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad * ctx.scale, None


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d with weight normalisation over dim 2, stored as ``weight_g``/``weight_v`` like the
    (legacy) ``nn.utils.weight_norm`` the official checkpoints were saved with."""

    def __init__(self, channels: int, kernel_size: int, groups: int):
        super().__init__()
        self.padding = kernel_size // 2
        self.groups = groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))

    def weight(self) -> Tensor:
        norm = self.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt()
        return self.weight_v * (self.weight_g / norm)

    def forward(self, x: Tensor) -> Tensor:
        return F.conv1d(x, self.weight(), self.bias, padding=self.padding, groups=self.groups)


class SamePad(nn.Module):
    """Drop the extra output step an even kernel with ``padding=k//2`` produces."""

    def __init__(self, kernel_size: int):
        super().__init__()
        self.remove = 1 if kernel_size % 2 == 0 else 0

    def forward(self, x: Tensor) -> Tensor:
        return x[:, :, : -self.remove] if self.remove else x


def relative_position_buckets(length: int, num_buckets: int, max_distance: int, device: torch.device) -> Tensor:
    """(length, length) T5-style buckets: bidirectional, exact up to a quarter of the buckets, then log-spaced."""
    position = torch.arange(length, dtype=torch.long, device=device)
    relative = position[None, :] - position[:, None]
    half = num_buckets // 2
    bucket = (relative > 0).to(torch.long) * half
    distance = relative.abs()
    max_exact = half // 2
    large = max_exact + (
        torch.log(distance.float() / max_exact) / math.log(max_distance / max_exact) * (half - max_exact)
    ).to(torch.long)
    large = torch.clamp_max(large, half - 1)
    return bucket + torch.where(distance < max_exact, distance, large)


class BeatsAttention(nn.Module):
    """Multi-head self-attention with GRU-gated relative-position bias, run on a fused kernel."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        dim = config.encoder_embed_dim
        self.num_heads = config.encoder_attention_heads
        self.head_dim = dim // self.num_heads
        self.dropout = config.attention_dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.gru_rel_pos = config.gru_rel_pos
        if self.gru_rel_pos:
            self.grep_linear = nn.Linear(self.head_dim, 8)
            self.grep_a = nn.Parameter(torch.ones(1, self.num_heads, 1, 1))

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        """x (B, L, C) -> (B, L, C); ``inputs`` carries the shared bias, padding and kernel choice."""
        batch, length, dim = x.shape
        q = self.q_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        gate = self._gate(q) if inputs.position_bias is not None and self.gru_rel_pos else None
        out = attend(q, k, v, gate, inputs, self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))

    def _gate(self, q: Tensor) -> Tensor:
        """(B, H, L, 1) GRU gate scaling each query's relative-position bias (the official ``gate_a_1``)."""
        gates = torch.sigmoid(self.grep_linear(q).view(*q.shape[:3], 2, 4).sum(-1))
        gate_a, gate_b = gates.chunk(2, dim=-1)
        return gate_a * (gate_b * self.grep_a - 1.0) + 2.0


class BeatsLayer(nn.Module):
    """Post-norm (deep-norm scaled) or pre-norm transformer block, named like fairseq's."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        dim = config.encoder_embed_dim
        self.self_attn = BeatsAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, config.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_embed_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(config.dropout)
        self.activation_dropout = nn.Dropout(config.activation_dropout)
        self.activation = nn.GELU() if config.activation_fn == "gelu" else nn.ReLU()
        self.layer_norm_first = config.layer_norm_first
        self.alpha = math.pow(2 * config.encoder_layers, 0.25) if config.deep_norm else 1.0

    def forward(self, x: Tensor, inputs: AttentionInputs) -> Tensor:
        if self.layer_norm_first:
            x = x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), inputs))
            return x + self.dropout(self._ffn(self.final_layer_norm(x)))
        x = self.self_attn_layer_norm(x * self.alpha + self.dropout(self.self_attn(x, inputs)))
        return self.final_layer_norm(x * self.alpha + self.dropout(self._ffn(x)))

    def _ffn(self, x: Tensor) -> Tensor:
        return self.fc2(self.activation_dropout(self.activation(self.fc1(x))))


class BeatsTransformer(nn.Module):
    """The official ``TransformerEncoder``: conv positional embedding, layer norm, layers."""

    def __init__(self, config: BeatsConfig):
        super().__init__()
        dim = config.encoder_embed_dim
        self.pos_conv = nn.Sequential(
            WeightNormConv1d(dim, config.conv_pos, config.conv_pos_groups), SamePad(config.conv_pos), nn.GELU()
        )
        self.layers = nn.ModuleList(BeatsLayer(config) for _ in range(config.encoder_layers))
        self.num_buckets, self.max_distance = config.num_buckets, config.max_distance
        if config.relative_position_embedding and config.encoder_layers:
            # One table, owned by layer 0. The official model lists the same tensor under every layer;
            # the hooks write (copies) and read those keys so state_dicts match the official ones without
            # tensors that share storage (which safetensors refuses).
            self.layers[0].self_attn.relative_attention_bias = nn.Embedding(
                config.num_buckets, config.encoder_attention_heads
            )
            self.register_state_dict_post_hook(_list_table_under_every_layer)
            self.register_load_state_dict_pre_hook(_read_table_from_layer_keys)
        self.layer_norm = nn.LayerNorm(dim)
        self.layer_norm_first = config.layer_norm_first
        self.dropout = nn.Dropout(config.dropout)
        self.layerdrop = config.encoder_layerdrop
        self.kept_layers: list[bool] | None = None
        """Which layers the next training forward runs, drawn by :meth:`draw_layerdrop`; None: each training
        forward draws from torch's global generator, as the official code does."""
        self.kept_mask: Tensor | None = None
        """The same choice as a bool tensor on the weights' device, for compiled code (see ``forward``)."""
        self.gradient_decay = config.layer_wise_gradient_decay_ratio
        self.gradient_checkpointing = False
        self.attention: AttentionChoice = "auto"
        self.attention_dropout = config.attention_dropout

    def forward(self, x: Tensor, padding_mask: Tensor | None) -> list[Tensor]:
        """x (B, L, C) -> the output of every layer (the last one is the encoder output)."""
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[:, :, None], 0.0)
        x = x + self.pos_conv(x.transpose(1, 2)).transpose(1, 2)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        x = self.dropout(x)
        kernel = resolve_kernel(self.attention, x.device, self.training and self.attention_dropout > 0)
        inputs = AttentionInputs.build(kernel, self.position_bias(x.shape[1], x.device), padding_mask)
        outputs = []
        drops = self.training and self.layerdrop > 0
        mask: Tensor | None = None
        kept: list[bool] | None = None  # None: every layer runs
        if drops and torch.compiler.is_compiling():
            # a branch on the draw would break the graph in this loop, which sends the whole forward back to
            # eager; selecting each layer's result keeps one graph (a skipped layer's weights get zero grads)
            mask = self.kept_mask
            if mask is None:
                mask = torch.rand(len(self.layers), device=x.device) > self.layerdrop
        elif drops:
            kept = self.kept_layers
            if kept is None:
                kept = (torch.rand(len(self.layers)) > self.layerdrop).tolist()
        for index, layer in enumerate(self.layers):
            if self.gradient_decay != 1.0 and torch.is_grad_enabled():
                x = _GradMultiply.apply(x, self.gradient_decay)
            if mask is not None:
                x = torch.where(mask[index], self._run_layer(layer, x, inputs), x)
            elif kept is None or kept[index]:
                x = self._run_layer(layer, x, inputs)
            outputs.append(x)
        if self.layer_norm_first:
            outputs[-1] = self.layer_norm(outputs[-1])
        return outputs

    def draw_layerdrop(self, seed: int) -> None:
        """Draw which layers the next training forward skips from ``seed``, outside any compiled region."""
        kept = torch.rand(len(self.layers), generator=torch.Generator().manual_seed(seed)) > self.layerdrop
        self.kept_layers = kept.tolist()  # eager code branches on these without touching the device
        device = self.layer_norm.weight.device
        # pinned and non-blocking: a pageable copy to a GPU may wait for the stream, a host sync per step
        self.kept_mask = kept.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else kept

    def _run_layer(self, layer: nn.Module, x: Tensor, inputs: AttentionInputs) -> Tensor:
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer, x, inputs, use_reentrant=False)
        return layer(x, inputs)

    def position_bias(self, length: int, device: torch.device) -> Tensor | None:
        """(heads, length, length) relative-position bias from the shared bucket embedding."""
        if not self.layers or not hasattr(self.layers[0].self_attn, "relative_attention_bias"):
            return None
        table = self.layers[0].self_attn.relative_attention_bias
        buckets = relative_position_buckets(length, self.num_buckets, self.max_distance, device)
        return table(buckets).permute(2, 0, 1)


_TABLE = "self_attn.relative_attention_bias.weight"


def _list_table_under_every_layer(module: BeatsTransformer, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    table = state_dict.get(f"{prefix}layers.0.{_TABLE}")
    if table is None:
        return
    for index in range(1, len(module.layers)):
        state_dict[f"{prefix}layers.{index}.{_TABLE}"] = table.detach().clone()


def _read_table_from_layer_keys(module: BeatsTransformer, state_dict: dict, prefix: str, *_: object) -> None:
    """Load the shared table from the layer keys; like the official model, the last layer's copy wins."""
    copies = [state_dict.pop(f"{prefix}layers.{index}.{_TABLE}", None) for index in range(1, len(module.layers))]
    present = [copy for copy in copies if copy is not None]
    if present:
        state_dict[f"{prefix}layers.0.{_TABLE}"] = present[-1]


class BeatsEncoder(ModalityEncoder):
    """BEATs as a modbind encoder: ``forward({"features", "padding_mask"}) -> EncoderOutput``.

    ``pooled`` is the mean of the encoder output over patches that are not padding (the documented
    choice for a clip embedding); ``tokens`` are all patch features with their padding mask.
    """

    def __init__(self, config: BeatsConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.width = config.encoder_embed_dim
        self.post_extract_proj = (
            nn.Linear(config.embed_dim, config.encoder_embed_dim) if config.embed_dim != config.encoder_embed_dim else None
        )
        self.patch_embedding = nn.Conv2d(
            1, config.embed_dim, kernel_size=config.input_patch_size, stride=config.input_patch_size, bias=config.conv_bias
        )
        self.dropout_input = nn.Dropout(config.dropout_input)
        self.encoder = BeatsTransformer(config)
        self.layer_norm = nn.LayerNorm(config.embed_dim)
        self.predictor: nn.Linear | None = None
        if config.finetuned_model:
            self.predictor_dropout = nn.Dropout(config.predictor_dropout)
            self.predictor = nn.Linear(config.encoder_embed_dim, config.predictor_class)
        initialise(self, config)

    def forward(self, features: Batch) -> EncoderOutput:
        tokens, token_mask = self.extract_features(features["features"], features.get("padding_mask"))
        return EncoderOutput(pooled=masked_mean(tokens, token_mask), tokens=tokens, token_padding_mask=token_mask)

    def extract_features(self, fbank: Tensor, frame_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """The official ``extract_features`` after ``preprocess``: (B, T, 128) fbank -> (B, P, C), patch mask."""
        outputs, patch_mask = self.extract_all(fbank, frame_padding_mask)
        return outputs[-1], patch_mask

    def extract_all(self, fbank: Tensor, frame_padding_mask: Tensor | None = None) -> tuple[list[Tensor], Tensor | None]:
        """([patch-embed layer norm, post_extract_proj, layer 0, ..., layer n-1], patch padding mask)."""
        patches = self.patch_embedding(fbank.unsqueeze(1))
        patches = patches.reshape(patches.shape[0], patches.shape[1], -1).transpose(1, 2)
        normed = self.layer_norm(patches)
        patch_mask = None
        if frame_padding_mask is not None:
            patch_mask = coarsen_padding_mask(frame_padding_mask.bool(), normed.shape[1])
        projected = self.post_extract_proj(normed) if self.post_extract_proj is not None else normed
        return [normed, projected, *self.encoder(self.dropout_input(projected), patch_mask)], patch_mask

    def classify(self, features: Batch) -> Tensor:
        """Fine-tuned checkpoints only: the official AudioSet probabilities (B, classes)."""
        if self.predictor is None:
            raise RuntimeError("this BEATs checkpoint has no predictor (finetuned_model is False)")
        tokens, mask = self.extract_features(features["features"], features.get("padding_mask"))
        logits = self.predictor(self.predictor_dropout(tokens))
        return torch.sigmoid(masked_mean(logits, mask))

    def layers(self) -> list[nn.Module]:
        return list(self.encoder.layers)

    def set_step_seed(self, seed: int) -> None:
        """Layerdrop skips the same layers on every rank: the whole batch shares the choice, drawn from ``seed``."""
        self.encoder.draw_layerdrop(seed)

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        self.encoder.gradient_checkpointing = enabled

    def set_attention(self, choice: AttentionChoice) -> None:
        """Which attention kernel the layers use (see :mod:`modbind_audio_beats.attention`)."""
        self.encoder.attention = choice


def masked_mean(tokens: Tensor, padding_mask: Tensor | None) -> Tensor:
    """Mean over tokens that are not padding; (B, L, C) -> (B, C)."""
    if padding_mask is None:
        return tokens.mean(dim=1)
    keep = (~padding_mask).to(tokens.dtype)[:, :, None]
    return (tokens * keep).sum(dim=1) / keep.sum(dim=1).clamp_min(1.0)


@torch.no_grad()
def initialise(model: BeatsEncoder, config: BeatsConfig) -> None:
    """The official initialisation (BERT normal(0.02), deep-norm Xavier gains, conv position std)."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, 0.02)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, 0.02)
    conv = model.encoder.pos_conv[0]
    std = math.sqrt(4.0 / (config.conv_pos * config.encoder_embed_dim))
    conv.weight_v.normal_(0.0, std)
    conv.weight_g.copy_(conv.weight_v.pow(2).sum(dim=(0, 1), keepdim=True).sqrt())
    conv.bias.zero_()
    beta = math.pow(8 * config.encoder_layers, -0.25) if config.deep_norm else 1.0
    if config.deep_norm:
        for layer in model.encoder.layers:
            attn = layer.self_attn
            nn.init.xavier_normal_(attn.k_proj.weight, gain=1.0)
            nn.init.xavier_normal_(attn.q_proj.weight, gain=1.0)
            for weight in (attn.v_proj.weight, attn.out_proj.weight, layer.fc1.weight, layer.fc2.weight):
                nn.init.xavier_normal_(weight, gain=beta)
