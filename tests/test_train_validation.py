"""The recipe's ``data.val`` (validation InfoNCE per epoch) and ``eval.suite`` (evaluation after export)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from modbind.config import Recipe
import modbind
from train_world import build_separating_anchor, captions, imu_recipe, write_imu_world

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("val_world")
    texts = captions(48)
    train_texts, val_texts = texts[:32], texts[32:]  # val captions are not in the training set
    return {"root": root, "anchor": build_separating_anchor(root / "anchor", texts),
            "train": write_imu_world(root / "train", train_texts),
            "val": write_imu_world(root / "val", val_texts, seed=1)}


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def recipe_with_val(world: dict[str, Path], name: str, val: Path, **train: Any) -> dict[str, Any]:
    settings = imu_recipe(world["anchor"], world["train"], world["root"] / name, **train)
    settings["data"]["val"] = [{"manifest": str(val)}]
    return settings


def test_val_loss_is_logged_after_each_epoch_and_at_the_end(world, imu_plugin) -> None:
    # 32 items / batch 16 = 2 steps per epoch; 5 steps = 2 full epochs + 1 step of a third
    recipe = Recipe.model_validate(recipe_with_val(world, "val", world["val"], max_steps=5))
    result = modbind.align(recipe, progress=False)
    records = metrics(result.out_dir)
    vals = [r for r in records if r.get("event") == "val"]
    assert [r["step"] for r in vals] == [2, 4, 5]
    for record in vals:
        assert math.isfinite(record["val_loss"]) and record["val_loss"] > 0
        assert (record["val_items"], record["val_skipped"]) == (16, 0)
    # validation is deterministic (eval crops, no augmentation): changes come from training only
    untrained = Recipe.model_validate(recipe_with_val(world, "val_lr0", world["val"], max_steps=4,
                                                      optimizer={"lr": 1e-12, "min_lr": 0.0}))
    frozen = [r["val_loss"] for r in metrics(modbind.align(untrained, progress=False).out_dir)
              if r.get("event") == "val"]
    assert len(frozen) == 2 and frozen[0] == pytest.approx(frozen[1], rel=1e-5)
    # and validation does not change the training trajectory
    plain = modbind.align(Recipe.model_validate(imu_recipe(world["anchor"], world["train"],
                                                           world["root"] / "no_val", max_steps=5)), progress=False)
    assert plain.history == pytest.approx(result.history, rel=1e-5)
    assert not [r for r in metrics(plain.out_dir) if r.get("event") == "val"]


def test_unreadable_val_items_are_skipped_and_counted(world, imu_plugin, tmp_path) -> None:
    val = write_imu_world(tmp_path / "val", captions(48)[32:], seed=1)
    (tmp_path / "val" / "imu3.npy").write_bytes(b"corrupt")
    recipe = Recipe.model_validate(recipe_with_val(world, "val_corrupt", val, max_steps=2))
    result = modbind.align(recipe, progress=False)
    [record] = [r for r in metrics(result.out_dir) if r.get("event") == "val"]
    assert (record["val_items"], record["val_skipped"]) == (15, 1)
    assert math.isfinite(record["val_loss"])


def test_eval_suite_runs_on_the_export(world, imu_plugin, tmp_path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  - task: retrieval\n    data: {world['val']}\n    languages: [en]\n    name: imu-val\n")
    settings = imu_recipe(world["anchor"], world["train"], world["root"] / "evaluated", max_steps=2)
    settings["eval"] = {"suite": str(suite)}
    result = modbind.align(Recipe.model_validate(settings), progress=False)
    report_file = result.out_dir / "eval" / "report.json"
    report = json.loads(report_file.read_text())
    assert [(t["task"], t["label"]) for t in report["tasks"]] == [("retrieval", "imu-val")]
    assert report["tasks"][0]["rows"]
    [logged] = [r for r in metrics(result.out_dir) if r.get("event") == "eval"]
    assert logged["report"] == str(report_file) and logged["step"] == 2
