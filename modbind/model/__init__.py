"""The product of an alignment: encoder + head in the anchor's space, its export, card and loader, and
bundles of several such models that share one anchor.

The ground floor under ``train`` (which builds and exports it) and ``eval`` (which loads and scores it);
neither of those imports the other.
"""

from __future__ import annotations

from modbind.lazy import lazy_exports

_LAZY = {
    "AlignedBundle": "modbind.model.bundle",
    "create_bundle": "modbind.model.bundle",
    "is_bundle": "modbind.model.bundle",
    "load_bundle": "modbind.model.bundle",
    "untrained_like": "modbind.model.bundle",
    "AlignedEncoder": "modbind.model.aligned",
    "AlignedModel": "modbind.model.exported",
    "build_aligned_model": "modbind.model.exported",
    "load_aligned_model": "modbind.model.exported",
    "make_card": "modbind.model.card",
    "read_card": "modbind.model.card",
}

__getattr__ = lazy_exports("modbind.model", _LAZY)

__all__ = list(_LAZY)
