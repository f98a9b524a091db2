"""Which model an evaluation or embedding run uses: an export or a bundle, an untrained control, or the anchor alone."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from modbind.config import AnchorConfig, anchor_config
from modbind.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from modbind.plugins import Registry


def resolve_model(
    path: Path | None,
    registry: Registry,
    *,
    untrained: bool = False,
    plugin: str | None = None,
    plugin_options: dict[str, Any] | None = None,
    anchor: str | None = None,
    anchor_pretrained: str | None = None,
    device: str = "cpu",
    seed: int = 0,
) -> tuple[Any | None, Any | None, dict[str, Any]]:
    """(aligned model or bundle, or None; anchor or None; what to record about it in a report).

    ``path`` is an export or a bundle folder. ``untrained`` with a ``path`` builds its chance-level
    control: the same plugins, options and anchor with seeded random weights (for a bundle, every
    member). ``registry`` supplies the plugins a card or ``--plugin`` names, and anchor providers.
    """
    if untrained and path is not None:
        if plugin or plugin_options or anchor:
            raise ConfigError("--untrained with a MODEL copies the plugins, options and anchor of its card(s); "
                              "drop --plugin/--plugin-option/--anchor (or the MODEL folder)")
        from modbind.model import untrained_like

        model = untrained_like([path], registry, seed=seed, device=device)
        return model, None, {"path": None, "untrained": True, "untrained_like": str(path), "seed": seed,
                             "card": model.card}
    if untrained:
        if not plugin:
            raise ConfigError("--untrained needs --plugin NAME (see `modbind plugins`) or a MODEL folder to copy")
        from modbind.model import build_aligned_model

        config = anchor_config(anchor, anchor_pretrained) if anchor else AnchorConfig()
        encoder_plugin = registry.encoder(plugin)
        model = build_aligned_model(encoder_plugin, encoder_plugin.options(plugin_options or {}), config,
                                    registry.anchor_provider(config.model), seed=seed, device=device)
        return model, None, {"path": None, "untrained": True, "seed": seed, "card": model.card}
    if path is not None:
        if plugin or plugin_options:
            raise ConfigError("--plugin/--plugin-option only apply with --untrained or without a MODEL; an exported "
                              "MODEL uses the plugins named in its card.json")
        from modbind.model import is_bundle, load_aligned_model, load_bundle

        moved = anchor_config(anchor, anchor_pretrained) if anchor else None  # the card's anchor, found elsewhere
        if is_bundle(path):
            model = load_bundle([path], registry, device=device, anchor=moved)
        else:
            model = load_aligned_model(path, registry, device=device, anchor=moved)
        return model, None, {"path": str(path), "untrained": False, "card": model.card}
    if anchor:
        from modbind.anchor import load_anchor

        config = anchor_config(anchor, anchor_pretrained)
        loaded = load_anchor(config, registry.anchor_provider(config.model), device=device)
        return None, loaded, {"path": None, "untrained": False, "anchor_only": True,
                              "card": {"anchor_identity": loaded.identity}}
    raise ConfigError("give an exported MODEL (or bundle) folder, --untrained --plugin NAME, or --anchor for "
                      "anchor-only baselines")
