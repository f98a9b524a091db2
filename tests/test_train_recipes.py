"""The shipped recipes validate, carry the paper's values and split over common GPU counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from modbind.plugins import get_registry
from modbind.recipes import load_recipe, resolve_recipe

RECIPES = sorted((Path(__file__).resolve().parents[1] / "recipes").glob("*_*.yaml"))
TRAINING_RECIPES = [p for p in RECIPES if p.stem.split("_")[-1] in {"basic", "expanded", "lora"}]


def test_every_plugin_has_basic_expanded_and_lora_recipes() -> None:
    stems = {p.stem for p in TRAINING_RECIPES}
    for plugin in ("beats", "htsat", "mae"):
        assert {f"{plugin}_basic", f"{plugin}_expanded", f"{plugin}_lora"} <= stems


@pytest.mark.parametrize("path", TRAINING_RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_with_the_paper_values(path: Path) -> None:
    recipe = load_recipe(path)
    if recipe.plugin.name in get_registry().encoders:
        recipe = resolve_recipe(recipe, get_registry()).recipe  # the plugin's own options model accepts it too
    setting = path.stem.split("_")[-1]
    assert recipe.train.batch_size == (110 if setting == "expanded" else 64)
    assert recipe.train.finetune == ("lora" if setting == "lora" else "full")
    if setting == "expanded":
        assert recipe.train.epochs == 10
    opt = recipe.train.optimizer
    assert (opt.lr, opt.min_lr, tuple(opt.betas), opt.eps, opt.weight_decay) == (5e-5, 1e-5, (0.9, 0.98), 1e-8, 1e-6)
    options = recipe.plugin.options
    assert (options["clip_seconds"], options["freq_mask"], options["time_mask"]) == (10.0, 48, 96)
    assert recipe.data.caption_language == "en"
