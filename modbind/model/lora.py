"""Folding LoRA adapters back into plain layers, so an export is an ordinary encoder any plugin rebuilds."""

from __future__ import annotations

from torch import nn


def merge_lora_(module: nn.Module) -> int:
    """Fold every LoRA adapter into its base layer and put the plain layer back; returns how many."""
    try:
        from peft.tuners.lora import LoraLayer
    except ImportError:  # pragma: no cover - peft is a dependency
        return 0
    wrapped = [(name, sub) for name, sub in module.named_modules() if isinstance(sub, LoraLayer)]
    for name, layer in wrapped:
        layer.merge()
        parent_name, _, child = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        setattr(parent, child, layer.get_base_layer())
    return len(wrapped)
