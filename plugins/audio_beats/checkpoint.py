"""Load official BEATs checkpoints (``{"cfg", "model"}`` .pt, or .safetensors with ``cfg`` metadata).

The architecture always comes from the file's own ``cfg``; the weights must then match it exactly
(strict), so a truncated or foreign checkpoint fails here with the keys that differ, not later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbind.checkpoint_io import compare_state, read_checkpoint
from modbind.errors import CheckpointError
from modbind_audio_beats.config import BeatsConfig
from modbind_audio_beats.model import BeatsEncoder


def load_beats_checkpoint(path: Path) -> BeatsEncoder:
    """Build a :class:`BeatsEncoder` from ``path``'s cfg and load its weights strictly (on the CPU)."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    cfg = checkpoint.metadata.get("cfg")
    if not isinstance(cfg, dict):
        raise CheckpointError(
            f"{path} has no BEATs 'cfg' dict (found metadata keys: {sorted(checkpoint.metadata) or 'none'}); "
            "official BEATs checkpoints store their architecture there"
        )
    config = BeatsConfig.from_dict(cfg, where=f"cfg of {path}")
    model = BeatsEncoder(config)
    load_state_strict(model, checkpoint.tensors, path)
    return model


def load_state_strict(model: BeatsEncoder, tensors: dict[str, Any], path: Path) -> None:
    """``load_state_dict(strict=True)`` with an error that names missing, unexpected and misshapen keys."""
    expected = model.state_dict()
    mismatch = compare_state(tensors, {key: value.shape for key, value in expected.items()})
    if not mismatch.fits:
        raise CheckpointError(f"{path} does not fit the BEATs model its cfg describes: {mismatch.describe()}")
    model.load_state_dict({key: tensors[key] for key in expected}, strict=True)
