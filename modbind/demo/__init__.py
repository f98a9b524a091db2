"""The built-in demo: a synthetic world of sound concepts, its tiny pre-aligned anchor, and ``modbind demo``.

``generate_world`` doubles as the test-data factory of the suite (real wav/png files and manifests).
Names load lazily so importing this package stays cheap.
"""

from __future__ import annotations

from modbind.lazy import lazy_exports

_LAZY = {
    "generate_world": "modbind.demo.world",
    "WorldPaths": "modbind.demo.world",
    "WorldSpec": "modbind.demo.world",
    "CONCEPTS": "modbind.demo.concepts",
    "LANGUAGES": "modbind.demo.concepts",
    "build_demo_anchor": "modbind.demo.anchor",
    "AnchorRecipe": "modbind.demo.anchor",
    "run_demo": "modbind.demo.run",
}


__getattr__ = lazy_exports("modbind.demo", _LAZY)


__all__ = list(_LAZY)
