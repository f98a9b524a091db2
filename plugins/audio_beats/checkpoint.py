"""Load official BEATs checkpoints (``{"cfg", "model"}`` .pt, or .safetensors with ``cfg`` metadata).

The architecture always comes from the file's own ``cfg``; the weights must then match it exactly
(strict), so a truncated or foreign checkpoint fails here with the keys that differ, not later.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modbind.checkpoint_io import read_checkpoint
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
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    misshapen = [
        f"{key} {tuple(tensors[key].shape)} != {tuple(expected[key].shape)}"
        for key in expected
        if key in tensors and tuple(tensors[key].shape) != tuple(expected[key].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if misshapen:
        problems.append(f"wrong shapes: {'; '.join(misshapen[:3])}")
    if problems:
        raise CheckpointError(f"{path} does not fit the BEATs model its cfg describes: {'; '.join(problems)}")
    model.load_state_dict({key: tensors[key] for key in expected}, strict=True)
