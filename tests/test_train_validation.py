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


def test_val_every_sets_the_validation_interval_in_steps(world, imu_plugin) -> None:
    # 2 steps per epoch; every 3 steps instead of every epoch, and at the end
    recipe = Recipe.model_validate(recipe_with_val(world, "val_every", world["val"], max_steps=5, val_every=3))
    result = modbind.align(recipe, progress=False)
    assert [r["step"] for r in metrics(result.out_dir) if r["event"] == "val"] == [3, 5]


def test_evaluation_during_training_is_logged_and_leaves_training_unchanged(world, imu_plugin, tmp_path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  - task: retrieval\n    data: {world['val']}\n    languages: [en]\n    name: imu-val\n")
    # LoRA dropout makes training depend on the model's mode and on torch's random state, which evaluation changes
    train = {"max_steps": 5, "finetune": "lora", "lora": {"r": 4, "alpha": 8, "dropout": 0.3}}
    settings = imu_recipe(world["anchor"], world["train"], world["root"] / "periodic", **train)
    settings["eval"] = {"every_steps": 2, "during_training_suite": str(suite)}
    periodic = modbind.align(Recipe.model_validate(settings), progress=False)
    plain = modbind.align(Recipe.model_validate(imu_recipe(world["anchor"], world["train"],
                                                           world["root"] / "not-periodic", **train)), progress=False)
    assert periodic.history == plain.history  # bit for bit: the evaluations took nothing from training

    events = [r for r in metrics(periodic.out_dir) if r["event"] == "eval_during_training"]
    assert [r["step"] for r in events] == [2, 4]
    for record in events:
        keys = set(record["metrics"])
        assert {"imu-val/en imu→text/R@1", "imu-val/en text→imu/R@1", "imu-val/en imu→text/mAP@10"} <= keys
        assert all(0.0 <= value <= 100.0 for value in record["metrics"].values())
        report = periodic.out_dir / "eval" / "during_training" / f"step{record['step']:08d}" / "report.json"
        assert json.loads(report.read_text())["tasks"][0]["label"] == "imu-val"
    assert not (periodic.out_dir / "eval" / "report.json").exists()  # no eval.suite: nothing after training


def test_periodic_metrics_reach_tensorboard_and_need_a_suite(tmp_path) -> None:
    from modbind.errors import ConfigError
    from modbind.recipes import load_recipe
    from modbind.train.trainer import MetricsLog

    class Board:
        def __init__(self) -> None:
            self.scalars: dict[str, tuple[float, int]] = {}

        def add_scalar(self, tag: str, value: float, step: int) -> None:
            self.scalars[tag] = (value, step)

        def flush(self) -> None:
            pass

    log = MetricsLog(tmp_path / "metrics.jsonl", enabled=True)
    log.board = Board()
    log.write({"event": "eval_during_training", "step": 4, "metrics": {"imu-val/en item→text/R@1": 12.5}})
    log.write({"event": "val", "step": 4, "val_loss": 1.5, "val_items": 16, "val_skipped": 0})
    assert log.board.scalars == {"eval_during_training/imu-val/en item→text/R@1": (12.5, 4), "val/loss": (1.5, 4)}
    with pytest.raises(ConfigError, match=r"every_steps is set but there is no suite to run"):
        load_recipe(None, ["eval.every_steps=100"])


def test_the_recipe_snippets_in_the_docs_validate() -> None:
    import re

    import yaml

    text = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text(encoding="utf-8")
    [snippet] = re.findall(r"```yaml\n(.*?)```", text, flags=re.S)
    recipe = Recipe.model_validate(yaml.safe_load(snippet))
    assert recipe.train.val_every == 500 and recipe.eval.every_steps == 2000
    assert recipe.eval.periodic_suite == Path("suites/quick.yaml") != recipe.eval.suite
