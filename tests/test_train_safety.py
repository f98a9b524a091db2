"""What a run folder or a manifest cannot make the trainer do: run code, read outside the data, die on a torn
file, fill the disk with checkpoints or leave shared memory behind."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modbind.config import Recipe
from modbind.errors import UnsafePathError
from modbind.train.trainer import run_alignment
from train_world import build_separating_anchor, captions, imu_recipe, write_imu_world

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("safety_world")
    texts = captions(32)
    return {"root": root, "anchor": build_separating_anchor(root / "anchor", texts),
            "manifest": write_imu_world(root / "imu", texts)}


def recipe_for(world: dict[str, Path], name: str, **train: Any) -> Recipe:
    return Recipe.model_validate(imu_recipe(world["anchor"], world["manifest"], world["root"] / name, **train))


def outside_manifest(world: dict[str, Path], tmp_path: Path, path: str) -> Path:
    """A copy of the IMU manifest whose third line names ``path``."""
    lines = world["manifest"].read_text(encoding="utf-8").splitlines()
    row = json.loads(lines[2])
    row["path"] = path
    lines[2] = json.dumps(row)
    manifest = tmp_path / "data" / "train.jsonl"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for item in world["manifest"].parent.glob("*.npy"):
        (manifest.parent / item.name).write_bytes(item.read_bytes())
    return manifest


def test_align_refuses_manifest_paths_outside_the_root_before_deepspeed_starts(world, imu_plugin, tmp_path,
                                                                               monkeypatch) -> None:
    secret = tmp_path / "outside" / "secret.npy"
    secret.parent.mkdir()
    np.save(secret, np.zeros((6, 40), dtype=np.float32))

    def no_engine():
        raise AssertionError("DeepSpeed started before the manifest was checked")

    monkeypatch.setattr("modbind.train.trainer.init_distributed", no_engine)
    manifest = outside_manifest(world, tmp_path, "../outside/secret.npy")
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "run", max_steps=2)
    with pytest.raises(UnsafePathError, match=r"train.jsonl:3: path '../outside/secret.npy' leaves the data root"):
        run_alignment(Recipe.model_validate(settings), progress=False)

    absolute = outside_manifest(world, tmp_path / "abs", str(secret))
    settings = imu_recipe(world["anchor"], absolute, tmp_path / "run", max_steps=2)
    settings["data"]["val"] = [{"manifest": str(absolute)}]
    with pytest.raises(UnsafePathError, match=r"train.jsonl:3: absolute path .* data.train\[0\].allow_absolute_paths"):
        run_alignment(Recipe.model_validate(settings), progress=False)
    settings["data"]["train"][0]["allow_absolute_paths"] = True
    with pytest.raises(UnsafePathError, match=r"data.val\[0\].allow_absolute_paths"):
        run_alignment(Recipe.model_validate(settings), progress=False)


def test_allowed_absolute_paths_train(world, imu_plugin, tmp_path) -> None:
    manifest = outside_manifest(world, tmp_path, str(world["manifest"].parent / "imu2.npy"))
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "run", max_steps=2)
    settings["data"]["train"][0]["allow_absolute_paths"] = True
    result = run_alignment(Recipe.model_validate(settings), progress=False)
    assert result.steps == 2 and result.skipped == 0
