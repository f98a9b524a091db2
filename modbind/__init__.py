"""modbind: add a modality to a frozen multilingual text-image space by emergent alignment.

The public API a plugin or a user script needs is importable from here. Heavy modules (torch) load on
first use, so ``modbind --help`` stays fast.
"""

from __future__ import annotations

import pluggy

from modbind.lazy import lazy_exports

__version__ = "0.1.0"

hookimpl = pluggy.HookimplMarker("modbind")
"""Decorator for plugin hook implementations (see :mod:`modbind.hookspecs`)."""

_LAZY = {
    # what a script calls
    "load": "modbind.api",
    "load_anchor": "modbind.api",
    "load_recipe": "modbind.api",
    "untrained": "modbind.api",
    "align": "modbind.api",
    "evaluate": "modbind.api",
    "Evaluation": "modbind.api",
    "AlignedModel": "modbind.model.exported",
    "AlignedBundle": "modbind.model.bundle",
    "create_bundle": "modbind.model.bundle",
    "Recipe": "modbind.config",
    "AnchorConfig": "modbind.config",
    "Suite": "modbind.suites",
    "SuiteTask": "modbind.suites",
    "TaskResult": "modbind.eval.result",
    "ManifestEntry": "modbind.data.manifest",
    "read_manifest": "modbind.data.manifest",
    "write_manifest": "modbind.data.manifest",
    # what a plugin implements
    "AnchorProvider": "modbind.contracts",
    "Augmentation": "modbind.contracts",
    "DatasetReader": "modbind.contracts",
    "EncoderOptions": "modbind.contracts",
    "EncoderOutput": "modbind.contracts",
    "EncoderPlugin": "modbind.contracts",
    "EvalTask": "modbind.contracts",
    "ItemRandomness": "modbind.contracts",
    "Randomness": "modbind.contracts",
    "ModalityEncoder": "modbind.contracts",
    "PackedItem": "modbind.contracts",
    "draw_uniform": "modbind.contracts",
    # errors
    "ModbindError": "modbind.errors",
    "DataError": "modbind.errors",
    "CheckpointError": "modbind.errors",
    "ConfigError": "modbind.errors",
    "NonFiniteError": "modbind.errors",
}


__getattr__ = lazy_exports("modbind", _LAZY)


__all__ = ["__version__", "hookimpl", *_LAZY]
