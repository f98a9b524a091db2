"""Load the official AudioMAE checkpoints: the AudioSet fine-tuned ViT and the pre-trained MAE.

Both are ``{"model": state_dict, ...}`` (``misc.save_model`` may add optimizer, epoch, scaler, args),
read through :func:`modbind.checkpoint_io.read_checkpoint`. Their encoder keys are timm's ViT keys.

* Fine-tuned (``finetuned.pth``): every encoder key plus ``fc_norm`` and the 527-class ``head``. The head
  loads when the model has one (``num_classes`` 527) and is ignored otherwise.
* Pre-trained MAE (``pretrained.pth``): the encoder, then ``norm`` (applied to every token before the
  decoder), ``mask_token`` and ``decoder_*``. The decoder and ``mask_token`` are ignored and reported.
  There is no ``fc_norm``: the pooled vector is ``fc_norm(mean of tokens)`` and that LayerNorm must start
  from something. ``pool_norm="copy"`` (default) starts it from ``norm``'s gain and bias, so the pooled
  vector keeps the per-channel scale the encoder was pre-trained to emit; ``"fresh"`` starts it at the
  identity affine (weight 1, bias 0), which is what the official fine-tuning script does (it loads the MAE
  with ``strict=False`` and leaves ``fc_norm`` at init). Either way the choice is recorded in the report.

Anything else that does not fit (other extra keys, missing encoder keys, wrong shapes) is an error naming
the file, because it means the checkpoint is for a different architecture than the options describe.

The attention head count leaves no trace in the weights (``qkv`` is ``3·D x D`` for any head count), and a
wrong one still loads and runs, only with wrong outputs. So it is taken from the file's stored config when
it has one (``args.model`` of the official training scripts, or a ``cfg``/``config`` entry with
``num_heads``), else from the user's ``num_heads``; a file that records neither, with no ``num_heads``
given, is refused, and so is a ``num_heads`` that contradicts the file.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from modbind.checkpoint_io import StateMismatch, compare_state, read_checkpoint
from modbind.errors import CheckpointError
from modbind_audio_mae.config import AudioMAEConfig
from modbind_audio_mae.model import AudioMAEEncoder

log = logging.getLogger(__name__)

PoolNorm = Literal["copy", "fresh"]
DECODER_KEYS = ("decoder_", "mask_token")
"""Key prefixes of the MAE decoder side (reconstruction only)."""

OFFICIAL_MODEL_HEADS: dict[str, int] = {
    f"{prefix}vit_{size}{suffix}": heads
    for size, heads in (("small_patch16", 6), ("base_patch16", 12), ("large_patch16", 16), ("huge_patch14", 16))
    for prefix, suffix in (("", ""), ("mae_", ""), ("mae_", "_dec512d8b"))
}
"""Heads per block of the model names ``args.model`` takes in the official scripts (``models_vit.py``,
``models_mae.py``): the training scripts save ``args`` beside the weights."""
CONFIG_ENTRIES = ("cfg", "config", "model_config")
"""File entries (torch pickle top level, or safetensors metadata) that may hold the constructor arguments."""


@dataclass
class LoadReport:
    """What a checkpoint load used, ignored and left at initialisation, for the run log."""

    source: str
    form: str
    """'fine-tuned' or 'pre-trained MAE'."""
    ignored: list[str] = field(default_factory=list)
    """Checkpoint keys not loaded (decoder, MAE token norm, a classifier the model does not have)."""
    initialised: list[str] = field(default_factory=list)
    """Model keys the checkpoint does not provide, left at their fresh initialisation."""
    copied: dict[str, str] = field(default_factory=dict)
    """Model key -> checkpoint key it was loaded from, where the names differ."""
    file_entries_skipped: list[str] = field(default_factory=list)
    """Non-weight entries of the file (optimizer, epoch, args, ...)."""

    def summary(self) -> str:
        parts = [f"loaded AudioMAE {self.form} weights from {self.source}"]
        decoder = [key for key in self.ignored if key.startswith(DECODER_KEYS)]
        other = [key for key in self.ignored if not key.startswith(DECODER_KEYS)]
        if decoder:
            parts.append(f"ignored {len(decoder)} decoder keys")
        if other:
            parts.append(f"ignored {', '.join(other)}")
        if self.copied:
            parts.append("copied " + ", ".join(f"{src} -> {dst}" for dst, src in self.copied.items()))
        if self.initialised:
            parts.append(f"initialised fresh: {', '.join(self.initialised)}")
        if self.file_entries_skipped:
            parts.append(f"skipped file entries: {', '.join(self.file_entries_skipped)}")
        return "; ".join(parts)


def load_audiomae_checkpoint(
    path: Path, config: AudioMAEConfig, *, num_heads: int | None, pool_norm: PoolNorm = "copy"
) -> AudioMAEEncoder:
    """An :class:`AudioMAEEncoder` of ``config`` with ``path``'s weights; the report is ``encoder.load_report``.

    ``num_heads`` is the head count the user asked for (None: not given); see :func:`checkpoint_num_heads`.
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    with torch.device("meta"):  # check the fit (shapes only) before paying for a full-size random init
        plan_official_load(AudioMAEEncoder(config), checkpoint.tensors, source=str(path), pool_norm=pool_norm)
    heads = checkpoint_num_heads(checkpoint.metadata, num_heads, source=str(path))
    if config.embed_dim % heads:  # only a stored config can get here: options check the user's count
        raise CheckpointError(f"{path}: its stored head count {heads} does not divide its width {config.embed_dim}, "
                              "so its stored config does not describe these weights; re-save them with the right "
                              "config, or without one and set plugin.options.num_heads")
    config = config.replace(num_heads=heads)
    encoder = AudioMAEEncoder(config)
    report = load_official_weights(encoder, checkpoint.tensors, source=str(path), pool_norm=pool_norm)
    report.file_entries_skipped = list(checkpoint.skipped)
    encoder.load_report = report
    log.info(report.summary())
    return encoder


def checkpoint_num_heads(metadata: Mapping[str, Any], requested: int | None, *, source: str) -> int:
    """The head count of a checkpoint: its stored config's, else ``requested``; CheckpointError when neither
    says or the two disagree (a wrong count would load without a word and give wrong outputs)."""
    stored = stored_num_heads(metadata)
    if stored is not None:
        heads, where = stored
        if requested is not None and requested != heads:
            raise CheckpointError(
                f"{source}: plugin.options.num_heads is {requested} but {where} says {heads}; remove num_heads "
                f"or set it to {heads}")
        return heads
    if requested is None:
        raise CheckpointError(
            f"{source} does not record the attention head count (the weights do not determine it and the file "
            "stores no config): set plugin.options.num_heads, 12 for the official AudioMAE ViT-B/16 checkpoints")
    return requested


def stored_num_heads(metadata: Mapping[str, Any]) -> tuple[int, str] | None:
    """``(heads, where it was found)`` from a file's non-weight entries, or None when they do not say."""
    for name in CONFIG_ENTRIES:
        heads = _field(metadata.get(name), "num_heads")
        if isinstance(heads, int) and not isinstance(heads, bool):
            return heads, f"its stored {name}.num_heads"
    args = metadata.get("args")
    heads = _field(args, "num_heads")
    if isinstance(heads, int) and not isinstance(heads, bool):
        return heads, "its stored args.num_heads"
    model = _field(args, "model")
    if isinstance(model, str) and model in OFFICIAL_MODEL_HEADS:
        return OFFICIAL_MODEL_HEADS[model], f"its stored args.model '{model}'"
    return None


def _field(entry: Any, name: str) -> Any:
    """``entry[name]`` of a dict or ``entry.name`` of an ``argparse.Namespace``; None when absent."""
    if isinstance(entry, Mapping):
        return entry.get(name)
    if isinstance(entry, argparse.Namespace):
        return getattr(entry, name, None)
    return None


def load_official_weights(
    encoder: AudioMAEEncoder, tensors: Mapping[str, torch.Tensor], *, source: str, pool_norm: PoolNorm = "copy"
) -> LoadReport:
    """Load an official state dict (fine-tuned or pre-trained MAE) into ``encoder.backbone``."""
    state, report = plan_official_load(encoder, tensors, source=source, pool_norm=pool_norm)
    fresh = encoder.backbone.state_dict()
    encoder.backbone.load_state_dict({**{k: fresh[k] for k in report.initialised}, **state}, strict=True)
    return report


def plan_official_load(
    encoder: AudioMAEEncoder, tensors: Mapping[str, torch.Tensor], *, source: str, pool_norm: PoolNorm = "copy"
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Which checkpoint tensor fills each backbone key; CheckpointError when the two do not fit."""
    tensors = _strip_wrapper_prefix(tensors)
    expected = {key: tuple(value.shape) for key, value in encoder.backbone.state_dict().items()}
    pretrained = any(key.startswith(DECODER_KEYS) for key in tensors) or (
        "norm.weight" in tensors and "fc_norm.weight" not in tensors)
    report = LoadReport(source=source, form="pre-trained MAE" if pretrained else "fine-tuned")
    state: dict[str, torch.Tensor] = {}
    for key in expected:
        if key in tensors:
            state[key] = tensors[key]
        elif pretrained and key.startswith("fc_norm.") and pool_norm == "copy" and f"norm.{key[8:]}" in tensors:
            state[key] = tensors[f"norm.{key[8:]}"]
            report.copied[key] = f"norm.{key[8:]}"
        elif key.startswith("head.") or (pretrained and key.startswith("fc_norm.")):
            report.initialised.append(key)
    used = (set(state) - set(report.copied)) | set(report.copied.values())
    unused = [key for key in tensors if key not in used]
    ignorable = [key for key in unused if _ignorable(key, pretrained)]
    unexpected = {key: tensors[key] for key in unused if key not in ignorable}
    mismatch = compare_state({**state, **unexpected}, expected, optional=report.initialised)
    if not mismatch.fits:
        raise CheckpointError(_mismatch_message(source, encoder.config, tensors, mismatch))
    report.ignored = ignorable
    return state, report


def _ignorable(key: str, pretrained: bool) -> bool:
    """Keys that belong to the checkpoint's training task, not to the encoder."""
    return key.startswith(DECODER_KEYS) or key.startswith("head.") or (pretrained and key.startswith("norm."))


def _strip_wrapper_prefix(tensors: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """Checkpoints saved from a DistributedDataParallel wrapper prefix every key with ``module.``."""
    if tensors and all(key.startswith("module.") for key in tensors):
        return {key[len("module."):]: value for key, value in tensors.items()}
    return tensors


def _mismatch_message(
    source: str, config: AudioMAEConfig, tensors: Mapping[str, torch.Tensor], mismatch: StateMismatch
) -> str:
    found = _describe_architecture(tensors)
    return (f"{source} does not fit the AudioMAE encoder (embed_dim {config.embed_dim}, depth {config.depth}, "
            f"num_classes {config.num_classes}): {mismatch.describe()}. {found}Set plugin.options 'size' or "
            "'config' to the checkpoint's architecture.")


def _describe_architecture(tensors: Mapping[str, torch.Tensor]) -> str:
    cls_token = tensors.get("cls_token")
    blocks = {int(key.split(".")[1]) for key in tensors if key.startswith("blocks.") and key.split(".")[1].isdigit()}
    if cls_token is None or not blocks:
        return "It does not look like an AudioMAE/ViT state dict (no cls_token or blocks.N keys). "
    return f"The checkpoint has embed_dim {cls_token.shape[-1]} and depth {max(blocks) + 1}. "
