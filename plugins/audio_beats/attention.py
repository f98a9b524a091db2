"""The two ways BEATs' attention runs: SDPA with an additive mask, or FlexAttention with a ``score_mod``.

Both compute ``softmax(q·kᵀ/√d + gate[b, h, i] · bias[h, i, j])`` over the keys that are not padding
(the official code's result; see :mod:`modbind_audio_beats.model`). They differ in *how*:

* ``sdpa`` materialises the gated bias as a (B, H, L, L) float mask. A float mask rules out the flash
  kernel, and the mask and its gradient cost B·H·L² values per layer (380 MB per layer in bf16 at
  64 × 10 s for BEATs-base);
* ``flex`` hands the (H, L, L) bias and the (B, H, L) gate to FlexAttention, which adds them inside its
  kernel (a ``score_mod``), and the padded keys become a block mask (whole padded key blocks are
  skipped). On CUDA the call is compiled into one fused Triton kernel; elsewhere torch runs its unfused
  reference, which computes the same thing (forward only: torch 2.14 refuses FlexAttention's backward
  on the CPU).

``auto`` picks flex where it can pay (CUDA, no attention dropout) and SDPA everywhere else.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from modbind.errors import ConfigError

AttentionChoice = Literal["auto", "sdpa", "flex"]
Kernel = Literal["sdpa", "flex"]


def flex_available() -> bool:
    """FlexAttention ships with torch >= 2.5; older torch keeps SDPA."""
    try:
        import torch.nn.attention.flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_kernel(choice: AttentionChoice, device: torch.device, dropout_active: bool) -> Kernel:
    """The kernel one forward uses. ``auto``: flex on CUDA (fused, no (B, H, L, L) mask), SDPA elsewhere
    (on the CPU flex has no backward and its unfused reference is no faster than SDPA)."""
    if choice == "sdpa":
        return "sdpa"
    if choice == "flex":
        if dropout_active:
            raise ConfigError("plugin.options (audio_beats): attention 'flex' has no attention dropout; "
                              "set attention: sdpa (or auto), or a cfg with attention_dropout 0")
        return "flex"
    return "flex" if device.type == "cuda" and not dropout_active and flex_available() else "sdpa"


@dataclass(frozen=True)
class AttentionInputs:
    """What every layer's attention shares in one forward (computed once, not per layer)."""

    kernel: Kernel
    position_bias: Tensor | None
    """(H, L, L) relative-position bias before gating, or None."""
    key_padding_mask: Tensor | None
    """(B, L), True = padding (SDPA's mask)."""
    block_mask: Any = None
    """flex: a ``BlockMask`` keeping the keys that are not padding; None attends to every key."""

    @classmethod
    def build(cls, kernel: Kernel, position_bias: Tensor | None, key_padding_mask: Tensor | None) -> "AttentionInputs":
        block_mask = None
        if kernel == "flex" and key_padding_mask is not None:
            block_mask = key_padding_block_mask(key_padding_mask)
        return cls(kernel, position_bias, key_padding_mask, block_mask)


def key_padding_block_mask(key_padding_mask: Tensor) -> Any:
    """A FlexAttention block mask that hides padded keys (True in ``key_padding_mask``) from every query."""
    from torch.nn.attention.flex_attention import create_block_mask

    batch, length = key_padding_mask.shape
    keep = ~key_padding_mask

    def real_key(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return keep[b, kv_idx]

    return create_block_mask(real_key, batch, None, length, length, device=key_padding_mask.device)


def attend(q: Tensor, k: Tensor, v: Tensor, gate: Tensor | None, inputs: AttentionInputs, dropout: float) -> Tensor:
    """(B, H, L, D) q, k, v and the (B, H, L, 1) gate (None without GRU gating) -> (B, H, L, D)."""
    if inputs.kernel == "flex":
        return _flex(q, k, v, gate, inputs)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=_additive_mask(q, gate, inputs), dropout_p=dropout)


def _additive_mask(q: Tensor, gate: Tensor | None, inputs: AttentionInputs) -> Tensor | None:
    mask: Tensor | None = None
    if inputs.position_bias is not None:
        bias = inputs.position_bias[None].to(q.dtype)
        mask = gate * bias if gate is not None else bias
    if inputs.key_padding_mask is not None:
        pad = inputs.key_padding_mask[:, None, None, :]
        if mask is None:
            mask = torch.zeros(pad.shape, dtype=q.dtype, device=q.device)
        mask = mask.masked_fill(pad, torch.finfo(mask.dtype).min)
    return mask.to(q.dtype) if mask is not None else None


def _flex(q: Tensor, k: Tensor, v: Tensor, gate: Tensor | None, inputs: AttentionInputs) -> Tensor:
    bias = inputs.position_bias
    score_mod: Callable[..., Tensor] | None = None
    if bias is not None and gate is not None:
        gate = gate[..., 0]  # (B, H, L)

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return score + gate[b, h, q_idx] * bias[h, q_idx, kv_idx]
    elif bias is not None:

        def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
            return score + bias[h, q_idx, kv_idx]
    try:
        return _flex_function(q.device.type)(q, k, v, score_mod=score_mod, block_mask=inputs.block_mask)
    except NotImplementedError as err:  # torch's own limits, e.g. no FlexAttention backward on the CPU
        raise ConfigError(f"plugin.options (audio_beats): attention 'flex' cannot run here ({err}); "
                          "use attention: auto or sdpa") from err


@functools.cache
def _flex_function(device_type: str) -> Callable[..., Tensor]:
    """Compiled FlexAttention on CUDA (the fused kernel); torch's unfused reference elsewhere."""
    from torch.nn.attention.flex_attention import flex_attention

    return torch.compile(flex_attention) if device_type == "cuda" else flex_attention
