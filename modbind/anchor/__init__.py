"""The frozen anchor (open_clip text + image towers) and the caption-embedding cache.

Names load lazily so importing :mod:`modbind.anchor` (e.g. to register the plugin) stays cheap.
"""

from __future__ import annotations

from modbind.lazy import lazy_exports

_LAZY = {
    "Anchor": "modbind.anchor.anchor",
    "AnchorChangedError": "modbind.anchor.anchor",
    "anchor_identity": "modbind.anchor.anchor",
    "load_anchor": "modbind.anchor.anchor",
    "AnchorWeightsMissing": "modbind.anchor.openclip",
    "OpenClipProvider": "modbind.anchor.openclip",
    "resolve_openclip": "modbind.anchor.openclip",
    "build_tiny_openclip": "modbind.anchor.tiny",
    "save_openclip_weights": "modbind.anchor.tiny",
    "tensor_fingerprint": "modbind.anchor.fingerprint",
    "CaptionCache": "modbind.anchor.cache",
    "EmbeddingCache": "modbind.anchor.cache",
    "CaptionCacheMiss": "modbind.anchor.cache",
}


__getattr__ = lazy_exports("modbind.anchor", _LAZY)


__all__ = list(_LAZY)
