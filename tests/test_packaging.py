"""The distribution ships every package and the architecture rules hold."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_for_the_build():
    setuptools = _pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "modbind").rglob("__init__.py")}
    assert found <= listed, f"add to pyproject [tool.setuptools] packages: {sorted(found - listed)}"
    for package, folder in setuptools["package-dir"].items():
        assert (REPO / folder / "__init__.py").is_file(), f"{package} -> {folder} has no __init__.py"


def test_builtin_plugins_use_the_public_entry_point_group():
    project = _pyproject()["project"]
    entry_points = project["entry-points"]["modbind.plugins"]
    assert set(entry_points) == {"audio_beats", "audio_htsat", "audio_mae", "depth_conv"}
    for name, target in entry_points.items():
        assert target == f"modbind_{name}.plugin"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_never_imports_a_plugin_and_nobody_imports_torchaudio():
    for path in (REPO / "modbind").rglob("*.py"):
        for name in _imports(path):
            assert not name.startswith("modbind_audio_"), f"{path} imports plugin {name}"
            assert not name.startswith("torchaudio"), f"{path} imports torchaudio"
    for path in (REPO / "plugins").rglob("*.py"):
        assert not any(n.startswith("torchaudio") for n in _imports(path)), f"{path} imports torchaudio"


def test_plugins_use_only_their_own_package_and_modbind_public_modules():
    for folder in (REPO / "plugins").iterdir():
        own = f"modbind_{folder.name}"
        for path in folder.rglob("*.py"):
            for name in _imports(path):
                if name.startswith("modbind_"):
                    assert name.split(".")[0] == own, f"{path} imports another plugin: {name}"


def test_deepspeed_is_wrapped_in_one_place():
    users = [p for p in (REPO / "modbind").rglob("*.py") if any(n.startswith("deepspeed") for n in _imports(p))]
    assert [p.relative_to(REPO).as_posix() for p in users] in ([], ["modbind/train/engine.py"]), users
