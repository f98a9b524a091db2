"""The model card: the JSON beside exported weights that says how to rebuild and trust them."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import modbind
from modbind.config import AnchorConfig
from modbind.contracts import AnchorProvider, EncoderOptions, EncoderPlugin
from modbind.errors import CheckpointError
from modbind.model.aligned import AlignedEncoder

CARD_FORMAT = "modbind-aligned-model"
CARD_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "card.json"


def make_card(
    plugin: EncoderPlugin[Any],
    options: EncoderOptions,
    anchor_config: AnchorConfig,
    anchor_identity: str,
    model: AlignedEncoder,
    *,
    anchor_provider: AnchorProvider,
    recipe: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to rebuild and trust the model: plugin, options, anchor, recipe, metrics.

    The anchor section describes the anchor as loaded: ``pretrained`` is what ``anchor_provider`` used (e.g.
    None for a ``local-dir:`` folder, which ignores a pretrained tag), not what the recipe happened to say.
    """
    anchor = anchor_config.model_dump(mode="json")
    anchor["pretrained"] = anchor_provider.pretrained_in_use(anchor_config.model, anchor_config.pretrained)
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_VERSION,
        "plugin": plugin.name,
        "modality": plugin.modality,
        "plugin_options": plugin.export_options(options, model.encoder).model_dump(mode="json"),
        "encoder_init": encoder_init(options),
        "anchor": anchor,
        "anchor_identity": anchor_identity,
        "dim": model.dim,
        "width": model.encoder.width,
        "head": model.head_kind,
        "logit_scale": float(model.logit_scale().detach()),
        "recipe": recipe,
        "metrics": metrics or {},
        "modbind_version": modbind.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def encoder_init(options: EncoderOptions) -> str:
    """Where the encoder's weights started: the checkpoint's name or path, or ``random``."""
    return "random" if options.checkpoint is None else str(options.checkpoint)


def read_card(directory: Path) -> dict[str, Any]:
    """The card of an exported folder, checked for the fields a rebuild needs."""
    card_path = Path(directory) / CARD_FILE
    if not card_path.is_file():
        raise CheckpointError(f"{directory} is not an exported modbind model (no {CARD_FILE}); "
                              "pass the 'export' folder of a run")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{card_path}: not valid JSON ({err})") from None
    if not isinstance(card, dict) or card.get("format") != CARD_FORMAT:
        found = card.get("format") if isinstance(card, dict) else type(card).__name__
        raise CheckpointError(f"{card_path}: format is {found!r}, expected '{CARD_FORMAT}'")
    missing = [k for k in ("plugin", "plugin_options", "anchor", "dim", "head") if k not in card]
    if missing:
        raise CheckpointError(f"{card_path}: missing field(s) {', '.join(missing)}")
    return card
