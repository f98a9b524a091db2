"""The package's import graph keeps its layers: model under train and eval, no modality in the core.

Every import statement counts, including the ones inside functions (lazy imports are still dependencies).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "modbind"


def imports_of(path: Path) -> set[str]:
    """Absolute module names a file imports (``from x import y`` counts as ``x`` and ``x.y``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def modules_in(layer: str) -> list[Path]:
    return sorted((PACKAGE / layer).rglob("*.py"))


def offending(layer: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    found = {}
    for path in modules_in(layer):
        bad = sorted(n for n in imports_of(path) if n.startswith(forbidden))
        if bad:
            found[str(path.relative_to(PACKAGE.parent))] = bad
    return found


AUDIO = ("modbind.audio", "modbind_audio_")


@pytest.mark.parametrize(("layer", "forbidden"), [
    ("train", ("modbind.eval", "modbind.workflow", "modbind.api", "modbind.cli", "modbind.demo", *AUDIO)),
    ("eval", ("modbind.train", "modbind.workflow", "modbind.api", "modbind.cli", "modbind.demo", *AUDIO)),
    ("model", ("modbind.train", "modbind.eval", "modbind.workflow", "modbind.api", "modbind.cli", *AUDIO)),
])
def test_layers_import_downward_only_and_know_no_modality(layer: str, forbidden: tuple[str, ...]) -> None:
    assert modules_in(layer), f"no modules found in modbind/{layer}"
    assert offending(layer, forbidden) == {}


def test_configuration_imports_no_runtime_layer() -> None:
    """Recipes and suite files are checked before anything runs; reading them never pulls in train or eval."""
    runtime = ("modbind.train", "modbind.eval", "modbind.model", "modbind.workflow", "modbind.api", "modbind.cli",
               "modbind.demo", *AUDIO)
    found = {name: sorted(n for n in imports_of(PACKAGE / name) if n.startswith(runtime))
             for name in ("config.py", "recipes.py", "suites.py", "contracts.py")}
    assert {name: bad for name, bad in found.items() if bad} == {}


def test_the_core_never_imports_a_plugin() -> None:
    bad = {str(p.relative_to(PACKAGE.parent)): sorted(n for n in imports_of(p) if n.startswith("modbind_"))
           for p in PACKAGE.rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_plugins_are_looked_up_only_at_the_edges() -> None:
    """Library code receives its plugins; only the CLI, the public API and the registry itself look them up."""
    edges = {"modbind/plugins.py", "modbind/api.py"}
    callers = sorted(str(p.relative_to(PACKAGE.parent)) for p in PACKAGE.rglob("*.py")
                     if "get_registry" in p.read_text(encoding="utf-8"))
    assert [c for c in callers if c not in edges and not c.startswith("modbind/cli/")] == []


PUBLIC = {"modbind", "modbind.anchor", "modbind.eval", "modbind.atomic", "modbind.cache", "modbind.lazy"}
"""What a third party may import: top-level names and the public subpackages."""


def private_imports(paths: list[Path], own: str) -> dict[str, list[str]]:
    """Per file, the modbind modules it imports beyond :data:`PUBLIC` and its own package ``own``."""
    bad = {}
    for path in paths:
        used = {n for n in imports_of(path) if n.startswith("modbind")}
        # ``from modbind.anchor import X`` also records ``modbind.anchor.X``: judge the module part only
        modules = {n.rsplit(".", 1)[0] if n.rsplit(".", 1)[0] in PUBLIC else n for n in used}
        private = sorted(m for m in modules if m not in PUBLIC and not m.startswith(own))
        if private:
            bad[path.name] = private
    return bad


def test_the_demo_uses_only_the_public_api() -> None:
    """The demo is written as a third party would."""
    assert private_imports(modules_in("demo"), "modbind.demo") == {}


def test_the_depth_plugin_uses_only_the_public_api() -> None:
    """The in-tree non-audio plugin is the example a third party copies: public names only."""
    paths = sorted((PACKAGE.parent / "plugins" / "depth_conv").rglob("*.py"))
    assert paths and private_imports(paths, "modbind_depth_conv") == {}
