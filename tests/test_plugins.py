"""Plugin discovery: entry points, the third-party IMU plugin, and the errors a user sees."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest
from click.testing import CliRunner

import modbind
from modbind.cli.main import cli
from modbind.errors import PluginError
from modbind.plugins import PluginSource, Registry, build_registry, get_registry


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modbind.cli.main", *args], capture_output=True, text=True)


def test_builtin_audio_plugins_come_from_entry_points(fresh_registry):
    registry = get_registry()
    for name in ("audio_beats", "audio_htsat", "audio_mae"):
        plugin = registry.encoder(name)
        assert plugin.modality == "audio"
        owner = registry.encoders.owners[name]
        assert owner.package == "modbind" and owner.module.startswith("modbind_audio_")


def test_third_party_imu_plugin_is_discovered_by_cli(imu_plugin):
    result = run_cli("plugins", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)["contributions"]}
    assert rows["imu_conv"]["modality"] == "imu"
    assert rows["imu_conv"]["package"] == "modbind-imu"
    assert rows["imu_conv"]["version"] == "0.2.0"
    assert rows["audio_beats"]["kind"] == "encoder"


def test_third_party_plugin_contract_works_in_process(imu_plugin, tmp_path):
    import numpy as np
    import torch

    plugin = get_registry().encoder("imu_conv")
    options = plugin.options({"window": 50})
    path = tmp_path / "walk.npy"
    np.save(path, np.random.default_rng(0).normal(size=(6, 30)).astype(np.float32))
    item = plugin.preprocess(plugin.load_item(path, options), options, train=False)
    assert item["series"].shape == (6, 50) and item["padding_mask"][30:].all() and not item["padding_mask"][:30].any()
    encoder = plugin.build_encoder(options)
    out = encoder({k: v.unsqueeze(0) for k, v in item.items()})
    assert out.pooled.shape == (1, encoder.width)
    assert torch.isfinite(out.pooled).all()


def test_unknown_plugin_suggests_closest(fresh_registry):
    with pytest.raises(PluginError, match=r"unknown encoder plugin 'audio_beat'.*did you mean 'audio_beats'.*installed: audio_beats"):
        get_registry().encoder("audio_beat")


def _source(name: str, package: str) -> PluginSource:
    return PluginSource(name, f"{name}.mod", package, "1.0")


def _plugin_module(name: str, encoder_name: str) -> types.ModuleType:
    module = types.ModuleType(name)

    class Fake:
        modality = "imu"

    Fake.name = encoder_name

    @modbind.hookimpl
    def register_encoders(register):
        register(Fake())

    module.register_encoders = register_encoders  # type: ignore[attr-defined]
    return module


def test_two_plugins_claiming_one_name_is_an_error():
    import pluggy

    from modbind import hookspecs

    manager = pluggy.PluginManager("modbind")
    manager.add_hookspecs(hookspecs)
    manager.register(_plugin_module("a", "same"), name="pkg_a")
    manager.register(_plugin_module("b", "same"), name="pkg_b")
    with pytest.raises(PluginError, match=r"two plugins claim the encoder plugin name 'same': 'pkg_a' \(dist-a\) and 'pkg_b' \(dist-b\)"):
        Registry(manager, [_source("pkg_a", "dist-a"), _source("pkg_b", "dist-b")])


def test_broken_plugin_is_reported_and_others_stay_usable(monkeypatch, fresh_registry):
    from importlib import metadata

    broken = metadata.EntryPoint(name="broken_one", value="modbind_no_such_module.plugin", group="modbind.plugins")
    real = metadata.entry_points(group="modbind.plugins")
    monkeypatch.setattr("modbind.plugins._entry_points", lambda: sorted([*real, broken], key=lambda e: e.name))
    registry = build_registry()
    failed = {s.name: s for s in registry.failed}
    assert "ModuleNotFoundError" in failed["broken_one"].error
    assert registry.encoder("audio_beats").name == "audio_beats"
    with pytest.raises(PluginError, match="'broken_one' is installed .* but failed to import: ModuleNotFoundError"):
        registry.encoder("broken_one")


def test_plugins_command_lists_core_contributions(fresh_registry):
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["KIND", "NAME", "MODALITY", "PACKAGE", "VERSION", "SOURCE"]
    encoders = {line.split()[1] for line in lines[1:] if line.startswith("encoder")}
    assert {"audio_beats", "audio_htsat", "audio_mae"} <= encoders
    assert any(line.startswith("augmentation") and "spec_augment" in line for line in lines)
