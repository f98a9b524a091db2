"""The in-tree depth plugin (``depth_conv``): discovered like any plugin, reads depth files safely, views them
deterministically in evaluation and randomly (from the given generator only) in training, and trains
through ``modbind align``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner
from PIL import Image

import modbind
from modbind.cli.main import cli
from modbind.plugins import get_registry
from train_world import build_separating_anchor, captions, write_depth_world


@pytest.fixture
def plugin():
    return get_registry().encoder("depth_conv")


def test_the_plugin_is_found_through_its_entry_point(plugin) -> None:
    owner = get_registry().encoders.owners["depth_conv"]
    assert owner.module == "modbind_depth_conv.plugin" and owner.package == "modbind"
    assert plugin.modality == "depth" and plugin.item_noun == "depth maps"
    assert {"en", "pt", "de", "ru"} <= set(plugin.zeroshot_templates)
    assert all("{}" in t for t in plugin.zeroshot_templates.values())


def test_png_in_millimetres_and_npy_in_metres_read_the_same(plugin, tmp_path: Path) -> None:
    metres = np.array([[0.0, 1.5], [2.25, 0.5]], dtype=np.float32)
    Image.fromarray((metres * 1000).astype(np.uint16)).save(tmp_path / "d.png")
    with_holes = metres.copy()
    with_holes[0, 1] = np.nan
    np.save(tmp_path / "d.npy", with_holes)
    options = plugin.options({})
    from_png = plugin.load_item(tmp_path / "d.png", options)
    from_npy = plugin.load_item(tmp_path / "d.npy", options)
    np.testing.assert_allclose(from_png, metres)
    np.testing.assert_allclose(from_npy, np.where(np.isnan(with_holes), 0, with_holes))
    tum = plugin.load_item(tmp_path / "d.png", plugin.options({"png_scale": 0.0002}))
    np.testing.assert_allclose(tum, metres / 5)


@pytest.mark.parametrize(("name", "write", "message"), [
    ("rgb.png", lambda p: Image.new("RGB", (4, 4)).save(p), "RGB image, not a single-channel 16-bit depth PNG"),
    ("grey8.png", lambda p: Image.new("L", (4, 4)).save(p), "L image, not a single-channel 16-bit depth PNG"),
    ("huge.npy", lambda p: np.save(p, np.ones((3, 40), np.float32)), "sides up to 32"),
    ("cube.npy", lambda p: np.save(p, np.ones((2, 3, 4), np.float32)), "expected 2-D"),
    ("broken.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n nope"), "not a readable depth map"),
    ("pickled.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object)), "not a readable depth map"),
])
def test_files_that_are_not_depth_maps_fail_naming_the_file(plugin, tmp_path: Path, name, write, message) -> None:
    path = tmp_path / name
    write(path)
    with pytest.raises(modbind.DataError, match=message) as caught:
        plugin.load_item(path, plugin.options({"max_side": 32}))
    assert str(path) in str(caught.value)


def test_evaluation_view_is_fixed_and_training_view_draws_only_from_its_generator(plugin) -> None:
    options = plugin.options({"size": 16})
    depth = np.random.default_rng(0).uniform(0.5, 5.0, size=(40, 60)).astype(np.float32)
    depth[10:30, 20:40] = 0  # a hole in the middle
    first = plugin.preprocess(depth, options, train=False)
    assert first["depth"].shape == first["coverage"].shape == (16, 16)
    assert torch.equal(plugin.preprocess(depth, options, train=False)["depth"], first["depth"])
    assert 0 <= float(first["depth"].min()) and float(first["depth"].max()) <= 1.0
    assert float(first["coverage"].min()) == 0.0 and float(first["coverage"].max()) == 1.0

    state = torch.random.get_rng_state()
    views = [plugin.preprocess(depth, options, train=True, generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(torch.random.get_rng_state(), state)  # the global stream is untouched
    assert torch.equal(views[0]["depth"], views[1]["depth"]) and not torch.equal(views[0]["depth"], views[2]["depth"])
    fixed = plugin.options({"size": 16, "random_crop": False, "flip": False})
    torch.testing.assert_close(plugin.preprocess(depth, fixed, train=True)["depth"], first["depth"])


def test_in_memory_maps_packing_and_bad_hints(plugin, tmp_path: Path) -> None:
    options = plugin.options({})
    millimetres = np.full((8, 8), 1500, dtype=np.uint16)
    np.testing.assert_allclose(plugin.as_item(millimetres, options, scale=0.001), np.full((8, 8), 1.5))
    with pytest.raises(modbind.ConfigError, match="only the hint scale="):
        plugin.as_item(millimetres, options, sample_rate=16000)
    depth = np.random.default_rng(1).uniform(0.2, 9.0, size=(5, 7)).astype(np.float32)
    packed = plugin.pack_item(depth, options)
    assert np.array_equal(plugin.unpack_item(packed, options), depth)


def depth_recipe(tmp_path: Path) -> Path:
    texts = captions(16, seed=6)
    anchor = build_separating_anchor(tmp_path / "anchor", texts)
    manifest = write_depth_world(tmp_path / "depth", texts)
    recipe = {
        "anchor": {"model": f"local-dir:{anchor}", "pretrained": None},
        "plugin": {"name": "depth_conv", "options": {"size": 16, "channels": [8, 16]}},
        "data": {"train": [{"manifest": str(manifest)}], "num_workers": 0,
                 "caption_cache": str(tmp_path / "caption-cache")},
        "train": {"batch_size": 8, "max_steps": 3, "precision": "fp32", "log_every": 1,
                  "optimizer": {"lr": 1e-3, "warmup_steps": 1}},
    }
    path = tmp_path / "depth.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_align_cli_trains_depth_maps_exports_and_reloads(tmp_path: Path) -> None:
    recipe_file = depth_recipe(tmp_path)
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["align", "--plugin", "depth_conv", "--recipe", str(recipe_file),
                                      "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "trained 3 steps" in result.output
    card = json.loads((out / "export" / "card.json").read_text())
    assert card["plugin"] == "depth_conv" and card["modality"] == "depth" and card["width"] == 16

    model = modbind.load(out / "export")
    files = sorted((tmp_path / "depth").glob("*.png"))[:3]
    from_files = model.encode_depth(files)
    arrays = [np.asarray(Image.open(f), dtype=np.float32) for f in files]
    torch.testing.assert_close(model.encode_depth(arrays, scale=0.001), from_files)
    assert from_files.shape == (3, 32)
    torch.testing.assert_close(from_files.norm(dim=-1), torch.ones(3))

    lora = CliRunner().invoke(cli, ["align", "--recipe", str(recipe_file), "--out", str(tmp_path / "lora"),
                                    "--set", "train.finetune=lora", "--set", "train.max_steps=1", "--no-progress"])
    assert lora.exit_code == 0, lora.output
    start = json.loads((tmp_path / "lora" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["trainable_parameters"] < start["total_parameters"]
    assert modbind.load(tmp_path / "lora" / "export").encode_depth(files[:1]).shape == (1, 32)
