"""modbind: add a modality to a frozen multilingual text-image space by emergent alignment.

The public API a plugin or a user script needs is importable from here. Heavy modules (torch) load on
first use, so ``modbind --help`` stays fast.
"""

from __future__ import annotations

from typing import Any

import pluggy

from modbind.lazy import lazy_exports

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("modbind")
"""Decorator for plugin hook implementations (see :mod:`modbind.hookspecs`)."""

_LAZY = {
    "AnchorProvider": "modbind.contracts",
    "Augmentation": "modbind.contracts",
    "DatasetReader": "modbind.contracts",
    "EncoderOptions": "modbind.contracts",
    "EncoderOutput": "modbind.contracts",
    "EncoderPlugin": "modbind.contracts",
    "EvalTask": "modbind.contracts",
    "ModalityEncoder": "modbind.contracts",
    "ModbindError": "modbind.errors",
    "DataError": "modbind.errors",
    "CheckpointError": "modbind.errors",
    "ConfigError": "modbind.errors",
}


__getattr__ = lazy_exports("modbind", _LAZY)


def load(path: Any, **kwargs: Any) -> Any:
    """Load an exported, aligned model folder (weights + card) for embedding and evaluation."""
    from modbind.train.export import load_aligned_model

    return load_aligned_model(path, **kwargs)


__all__ = ["__version__", "hookimpl", "load", *_LAZY]
