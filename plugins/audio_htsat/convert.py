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
_NAME_PAIRS: tuple[tuple[str, str], ...] = (
    # (official name, ClapAudioModel name); {fields} are filled from _FIELDS, the rest matches literally
    ("bn0.{rest}", "batch_norm.{rest}"),
    ("patch_embed.{embed}.{p}", "patch_embed.{embed}.{p}"),
    ("layers.{s}.blocks.{b}.norm1.{p}", "layers.{s}.blocks.{b}.layernorm_before.{p}"),
    ("layers.{s}.blocks.{b}.norm2.{p}", "layers.{s}.blocks.{b}.layernorm_after.{p}"),
    ("layers.{s}.blocks.{b}.attn.proj.{p}", "layers.{s}.blocks.{b}.attention.output.dense.{p}"),
    ("layers.{s}.blocks.{b}.attn.relative_position_bias_table",
     "layers.{s}.blocks.{b}.attention.self.relative_position_bias_table"),
    # derived on the way in (set aside before renaming), exported on the way out
    ("layers.{s}.blocks.{b}.attn.relative_position_index",
     "layers.{s}.blocks.{b}.attention.self.relative_position_index"),
    ("layers.{s}.blocks.{b}.mlp.fc1.{p}", "layers.{s}.blocks.{b}.intermediate.dense.{p}"),
    ("layers.{s}.blocks.{b}.mlp.fc2.{p}", "layers.{s}.blocks.{b}.output.dense.{p}"),
    ("layers.{s}.downsample.{down}.{p}", "layers.{s}.downsample.{down}.{p}"),
    ("norm.{p}", "norm.{p}"),
)
_FIELDS = {"rest": r".+", "embed": r"proj|norm", "down": r"reduction|norm", "p": r"weight|bias", "s": r"\d+",
           "b": r"\d+"}


def _pattern(template: str) -> re.Pattern[str]:
    """A template's regex: literal text escaped, each {field} a named group of its _FIELDS alternatives."""
    pieces = re.split(r"\{(\w+)\}", template)  # literal, field, literal, field, ...
    return re.compile("".join(re.escape(piece) if i % 2 == 0 else f"(?P<{piece}>{_FIELDS[piece]})"
                              for i, piece in enumerate(pieces)))


_RENAMES = tuple((_pattern(official), clap) for official, clap in _NAME_PAIRS)
_REVERSE = tuple((_pattern(clap), official) for official, clap in _NAME_PAIRS)
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


def _rename(key: str, rules: tuple[tuple[re.Pattern[str], str], ...]) -> str | None:
    for pattern, template in rules:
        if match := pattern.fullmatch(key):
            return template.format(**match.groupdict())
    return None
