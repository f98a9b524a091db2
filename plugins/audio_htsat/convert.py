"""Key converters between the official HTS-AT layout and transformers' ``ClapAudioModel`` layout.

Official (``RetroCirce/HTS-Audio-Transformer`` ``HTSAT_Swin_Transformer``, LAION-CLAP's ``audio_branch``)
and transformers differ only in names and in one fused tensor: the official ``attn.qkv`` holds query, key
and value as row thirds. Tensors that are functions of the config rather than learned (STFT kernels, the
mel matrix, shifted-window attention masks, relative-position indices) are set aside as *derived* so the
loader can check them against the model's own; the tagging head (``tscam_conv``, ``head``) is set aside
because the embedding (``latent_output``) does not use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor

PREFIX = "audio_encoder."
"""Every ``ClapAudioModel`` state-dict key starts with this."""

_BLOCK = r"layers\.(\d+)\.blocks\.(\d+)\."
# (official regex, ClapAudioModel template); one-to-one renames, checked in order.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"bn0\.(.+)", "batch_norm.{0}"),
    (r"patch_embed\.(proj|norm)\.(weight|bias)", "patch_embed.{0}.{1}"),
    (_BLOCK + r"norm1\.(weight|bias)", "layers.{0}.blocks.{1}.layernorm_before.{2}"),
    (_BLOCK + r"norm2\.(weight|bias)", "layers.{0}.blocks.{1}.layernorm_after.{2}"),
    (_BLOCK + r"attn\.proj\.(weight|bias)", "layers.{0}.blocks.{1}.attention.output.dense.{2}"),
    (_BLOCK + r"attn\.relative_position_bias_table",
     "layers.{0}.blocks.{1}.attention.self.relative_position_bias_table"),
    (_BLOCK + r"mlp\.fc1\.(weight|bias)", "layers.{0}.blocks.{1}.intermediate.dense.{2}"),
    (_BLOCK + r"mlp\.fc2\.(weight|bias)", "layers.{0}.blocks.{1}.output.dense.{2}"),
    (r"layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)", "layers.{0}.downsample.{1}.{2}"),
    (r"norm\.(weight|bias)", "norm.{0}"),
)
_QKV = re.compile(_BLOCK + r"attn\.qkv\.(weight|bias)")
_RELATIVE_INDEX = re.compile(_BLOCK + r"attn\.relative_position_index")
_DERIVED = re.compile(
    r"(spectrogram_extractor\.stft\.conv_(real|imag)\.weight|logmel_extractor\.melW"
    r"|" + _BLOCK + r"attn_mask|" + _BLOCK + r"attn\.relative_position_index)"
)
_TAGGING = re.compile(r"(tscam_conv|head)\.(weight|bias)")
QKV_PARTS = ("query", "key", "value")


@dataclass
class ConvertedState:
    """An official state dict sorted by what the encoder does with each tensor."""

    state: dict[str, Tensor] = field(default_factory=dict)
    """Learned tensors under ``ClapAudioModel`` names (``audio_encoder.…``)."""
    derived: dict[str, Tensor] = field(default_factory=dict)
    """Config-determined tensors under their official names (checked, then rebuilt by the model)."""
    tagging: list[str] = field(default_factory=list)
    """Official keys of the AudioSet tagging head, unused by the embedding."""
    unknown: list[str] = field(default_factory=list)
    """Keys no rule recognises."""


def official_to_clap(tensors: Mapping[str, Tensor]) -> ConvertedState:
    """Rename official HTS-AT keys (no ``sed_model.``/``audio_branch.`` prefix) to ``ClapAudioModel`` keys."""
    out = ConvertedState()
    for key, tensor in tensors.items():
        if _DERIVED.fullmatch(key):
            out.derived[key] = tensor
        elif _TAGGING.fullmatch(key):
            out.tagging.append(key)
        elif match := _QKV.fullmatch(key):
            stage, block, kind = match.groups()
            if tensor.shape[0] % 3:
                out.unknown.append(key)
                continue
            for part, chunk in zip(QKV_PARTS, tensor.chunk(3, dim=0)):
                out.state[f"{PREFIX}layers.{stage}.blocks.{block}.attention.self.{part}.{kind}"] = chunk.contiguous()
        else:
            renamed = _rename(key, _RENAMES)
            if renamed is None:
                out.unknown.append(key)
            else:
                out.state[PREFIX + renamed] = tensor
    return out


_REVERSE: tuple[tuple[str, str], ...] = (
    (r"batch_norm\.(.+)", "bn0.{0}"),
    (r"patch_embed\.(proj|norm)\.(weight|bias)", "patch_embed.{0}.{1}"),
    (_BLOCK + r"layernorm_before\.(weight|bias)", "layers.{0}.blocks.{1}.norm1.{2}"),
    (_BLOCK + r"layernorm_after\.(weight|bias)", "layers.{0}.blocks.{1}.norm2.{2}"),
    (_BLOCK + r"attention\.output\.dense\.(weight|bias)", "layers.{0}.blocks.{1}.attn.proj.{2}"),
    (_BLOCK + r"attention\.self\.relative_position_bias_table",
     "layers.{0}.blocks.{1}.attn.relative_position_bias_table"),
    (_BLOCK + r"attention\.self\.relative_position_index", "layers.{0}.blocks.{1}.attn.relative_position_index"),
    (_BLOCK + r"intermediate\.dense\.(weight|bias)", "layers.{0}.blocks.{1}.mlp.fc1.{2}"),
    (_BLOCK + r"output\.dense\.(weight|bias)", "layers.{0}.blocks.{1}.mlp.fc2.{2}"),
    (r"layers\.(\d+)\.downsample\.(reduction|norm)\.(weight|bias)", "layers.{0}.downsample.{1}.{2}"),
    (r"norm\.(weight|bias)", "norm.{0}"),
)
_SPLIT_QKV = re.compile(_BLOCK + r"attention\.self\.(query|key|value)\.(weight|bias)")


def clap_to_official(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The inverse of :func:`official_to_clap` on learned tensors and index buffers (q/k/v fused again).

    Used to compare a model against the official key manifest and to export weights the official code
    loads (``strict=False``: the derived front-end tensors and attention masks are not produced).
    """
    out: dict[str, Tensor] = {}
    pending: dict[str, dict[str, Tensor]] = {}
    for key, tensor in state.items():
        if not key.startswith(PREFIX):
            raise KeyError(f"'{key}' is not a ClapAudioModel key (expected the prefix '{PREFIX}')")
        key = key[len(PREFIX):]
        if match := _SPLIT_QKV.fullmatch(key):
            stage, block, part, kind = match.groups()
            pending.setdefault(f"layers.{stage}.blocks.{block}.attn.qkv.{kind}", {})[part] = tensor
            continue
        renamed = _rename(key, _REVERSE)
        if renamed is None:
            raise KeyError(f"no official HTS-AT name for '{PREFIX}{key}'")
        out[renamed] = tensor
    for key, parts in pending.items():
        if set(parts) != set(QKV_PARTS):
            raise KeyError(f"'{key}' needs query, key and value; found only {sorted(parts)}")
        out[key] = torch.cat([parts[p] for p in QKV_PARTS], dim=0)
    return out


def is_relative_position_index(official_key: str) -> bool:
    return _RELATIVE_INDEX.fullmatch(official_key) is not None


def _rename(key: str, rules: tuple[tuple[str, str], ...]) -> str | None:
    for pattern, template in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return template.format(*match.groups())
    return None
