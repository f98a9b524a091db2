"""The distribution ships every package and the architecture rules hold."""

from __future__ import annotations

import ast
import os
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


def test_the_wheel_ships_every_recipe_and_suite_and_finds_them_by_name(tmp_path):
    """Built and installed like a user's `pip install .`: the recipes come along and resolve by name."""
    import subprocess
    import sys
    import zipfile

    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "--no-build-isolation",
                            "--no-index", "-q", "-w", str(tmp_path / "wheel")], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    (wheel,) = (tmp_path / "wheel").glob("modbind-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"modbind/shipped_recipes/{p.name}" for p in (REPO / "recipes").glob("*.yaml")}
    expected |= {f"modbind/shipped_recipes/suites/{p.name}" for p in (REPO / "recipes" / "suites").glob("*.yaml")}
    assert len(expected) >= 11 and expected <= names
    site = tmp_path / "site"
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target",
                              str(site), str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    probe = ("import modbind, modbind.recipes as r, modbind.eval.suite as s; "
             "print(modbind.__file__); print(r.find_shipped('beats_basic')); "
             "print(r.load_recipe('htsat_lora').plugin.name); print(s.load_suite('paper').name)")
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr
    module, recipe, plugin, suite = run.stdout.splitlines()
    assert module.startswith(str(site)) and recipe == str(site / "modbind" / "shipped_recipes" / "beats_basic.yaml")
    assert plugin == "audio_htsat" and suite == "CACARA tables"
