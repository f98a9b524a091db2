"""Recipes: paper defaults, overrides, and one-line errors for every kind of bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from modbind.cli.main import cli
from modbind.config import Recipe
from modbind.errors import ConfigError
from modbind.plugins import get_registry
from modbind.recipes import apply_overrides, load_recipe, resolve_recipe

REPO = Path(__file__).resolve().parents[1]


def test_defaults_are_the_papers_basic_recipe():
    recipe = Recipe()
    optim = recipe.train.optimizer
    assert (optim.lr, optim.min_lr, optim.betas, optim.eps, optim.weight_decay) == (5e-5, 1e-5, (0.9, 0.98), 1e-8, 1e-6)
    assert recipe.train.batch_size == 64
    assert (recipe.anchor.model, recipe.anchor.pretrained) == ("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")
    assert recipe.data.caption_language == "en"
    assert recipe.eval.languages == ["en", "pt", "es", "fr", "de", "zh", "ja", "ru", "tr", "hi", "ar", "sw"]


def test_overrides_create_nested_values_and_parse_yaml_scalars():
    data = apply_overrides({"train": {"batch_size": 64}}, ["train.batch_size=8", "train.optimizer.lr=1e-4", "plugin.options.spec_augment=false"])
    assert data["train"]["batch_size"] == 8
    assert data["train"]["optimizer"]["lr"] == 1e-4
    assert data["plugin"]["options"]["spec_augment"] is False


def test_overrides_index_into_lists_without_touching_the_original():
    original = {"data": {"train": [{"manifest": "a.jsonl"}, {"manifest": "b.jsonl"}]}}
    data = apply_overrides(original, ["data.train.1.manifest=c.jsonl"])
    assert [s["manifest"] for s in data["data"]["train"]] == ["a.jsonl", "c.jsonl"]
    assert original["data"]["train"][1]["manifest"] == "b.jsonl"
    with pytest.raises(ConfigError, match="'5' is not an index of a list with 2 entries"):
        apply_overrides(original, ["data.train.5.manifest=x"])


def test_plugin_options_are_validated_and_filled_by_the_plugin(imu_plugin):
    recipe = resolve_recipe(load_recipe(None, ["plugin.name=imu_conv", "plugin.options.window=64"]), get_registry()).recipe
    assert recipe.plugin.options["window"] == 64
    assert recipe.plugin.options["channels"] == 6  # the plugin's default, filled in
    with pytest.raises(ConfigError, match=r"plugin.options \(imu_conv\): unknown key 'windw' \(did you mean 'window'\?\)"):
        resolve_recipe(load_recipe(None, ["plugin.name=imu_conv", "plugin.options.windw=64"]), get_registry())


@pytest.mark.parametrize(
    ("content", "overrides", "message"),
    [
        ("train:\n  batch_sise: 8\n", [], r"unknown key 'train.batch_sise' \(did you mean 'batch_size'\?\)"),
        ("train:\n  batch_size: many\n", [], r"'train.batch_size': Input should be a valid integer"),
        ("train: [1, 2\n", [], r"malformed YAML in .*recipe.yaml:\d+:\d+"),
        ("- just\n- a list\n", [], r"a recipe must be a YAML mapping"),
        ("", ["optimiser.lr=1"], r"unknown key 'optimiser' \(did you mean 'optimizer'\?\)|unknown key 'optimiser'"),
        ("train:\n  batch_size: 8\ndata:\n  num_workers: 0\ntrain:\n  epochs: 2\n", [],
         r"recipe.yaml:5:1: duplicate key 'train' \(first set on line 1\)"),
        ("train:\n  optimizer: {lr: 1.0e-3, lr: 2.0e-3}\n", [], r"recipe.yaml:2:27: duplicate key 'lr'"),
        ("", ["train.optimizer.betas=[1.5, 0.98]"], r"'train.optimizer.betas': .*beta1 1.5 is not in \[0, 1\)"),
        ("", ["train.optimizer.betas=[0.9, 1.0]"], r"'train.optimizer.betas': .*beta2 1.0 is not in \[0, 1\)"),
        ("", ["train.optimizer.eps=-1"], r"'train.optimizer.eps': Input should be greater than 0"),
        ("", ["train.optimizer.lr=.inf"], r"'train.optimizer.lr': Input should be a finite number"),
        ("", ["train.optimizer.lr=0"], r"'train.optimizer.lr': Input should be greater than 0"),
        ("", ["train.optimizer.min_lr=1.0"], r"'train.optimizer.min_lr': .*min_lr 1.0 is above lr 5e-05"),
        ("", ["train.optimizer.weight_decay=-1e-6"], r"'train.optimizer.weight_decay': .*greater than or equal to 0"),
        ("", ["train.optimizer.grad_clip=.nan"], r"'train.optimizer.grad_clip': Input should be a finite number"),
    ],
)
def test_bad_recipes_fail_with_one_clear_message(tmp_path, content, overrides, message):
    path = tmp_path / "recipe.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_recipe(path, overrides)


def test_a_recipe_saved_with_a_byte_order_mark_loads(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("train:\n  batch_size: 8\n", encoding="utf-8-sig")  # as Windows editors save it
    assert path.read_bytes().startswith(b"\xef\xbb\xbf")
    assert load_recipe(path, []).train.batch_size == 8


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["recipe", "validate", "missing.yaml"], "Error: recipe file not found: missing.yaml"),
        (["recipe", "show", "--set", "plugin.name=audio_beets"], "Error: unknown encoder plugin 'audio_beets' (did you mean 'audio_beats'?)"),
        (["recipe", "show", "--set", "train.epochs=-1"], "Error: recipe: 'train.epochs': Input should be greater than or equal to 1"),
        (["recipe", "show", "--set", "nonsense"], "Error: override 'nonsense' must look like key.path=value"),
        (["align", "--set", "train.optimizer.betas=[1.5, 0.98]"],
         "Error: recipe: 'train.optimizer.betas': Value error, beta1 1.5 is not in [0, 1)"),
    ],
)
def test_cli_bad_input_is_one_line_without_traceback(args, message, tmp_path):
    result = subprocess.run([sys.executable, "-m", "modbind.cli.main", *args], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith(message), result.stderr


def test_every_shipped_recipe_validates(fresh_registry):
    recipes = sorted((REPO / "recipes").glob("*.yaml"))
    assert recipes, "recipes/ holds no YAML files"
    for path in recipes:
        result = CliRunner().invoke(cli, ["recipe", "validate", str(path)])
        assert result.exit_code == 0, f"{path.name}: {result.output}"


def test_show_prints_the_resolved_recipe_as_yaml(fresh_registry):
    result = CliRunner().invoke(cli, ["recipe", "show", "--set", "train.batch_size=110"])
    assert result.exit_code == 0, result.output
    resolved = yaml.safe_load(result.output)
    assert resolved["train"]["batch_size"] == 110
    assert resolved["plugin"]["options"]["sample_rate"] == 16000


def test_a_suite_with_a_duplicate_key_is_refused(tmp_path):
    from modbind.suites import load_suite

    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n  - task: retrieval\n    data: a.jsonl\n    data: b.jsonl\n")
    with pytest.raises(ConfigError, match=r"suite.yaml:4:5: duplicate key 'data' \(first set on line 3\)"):
        load_suite(suite)


def test_shipped_eval_suite_parses_with_registered_tasks(fresh_registry):
    from modbind.suites import load_suite
    from modbind.plugins import get_registry

    suite = load_suite(REPO / "recipes" / "suites" / "paper.yaml")
    tasks = get_registry().eval_tasks
    assert all(spec.task in tasks for spec in suite.tasks)
    assert [spec.name for spec in suite.tasks][:2] == ["AudioCaps test", "Clotho evaluation"]
    assert suite.tasks[0].data == Path("data") / "audiocaps" / "test.jsonl"  # ${DATA_ROOT} defaults to ./data


def test_the_shipped_suite_reads_its_data_under_the_data_root_from_any_folder(fresh_registry, tmp_path, monkeypatch):
    from modbind.suites import load_suite

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MODBIND_DATA_ROOT", raising=False)
    paper = load_suite("paper")
    assert all(not str(spec.data).startswith("..") for spec in paper.tasks)
    assert [spec.data for spec in paper.tasks][:3] == [Path("data/audiocaps/test.jsonl"),
                                                      Path("data/clotho/evaluation.jsonl"), Path("data/esc50/all.jsonl")]
    monkeypatch.setenv("MODBIND_DATA_ROOT", str(tmp_path / "env"))
    assert load_suite("paper").tasks[0].data == tmp_path / "env" / "audiocaps" / "test.jsonl"
    assert load_suite("paper", tmp_path / "flag").tasks[0].data == tmp_path / "flag" / "audiocaps" / "test.jsonl"
    # A suite of one's own: ${DATA_ROOT} paths under the root, other relative paths beside the file.
    own = tmp_path / "suites" / "mine.yaml"
    own.parent.mkdir()
    own.write_text("tasks:\n  - {task: zeroshot, data: '${DATA_ROOT}/esc50/all.jsonl', options: {classes: c.json}}\n"
                   "  - {task: retrieval, data: local.jsonl, root: '${DATA_ROOT}/audio'}\n", encoding="utf-8")
    first, second = load_suite(own, "/data").tasks
    assert first.data == Path("/data/esc50/all.jsonl") and first.options["classes"] == str(own.parent / "c.json")
    assert second.data == own.parent / "local.jsonl" and second.root == Path("/data/audio")
    result = _invoke("eval", "--task", "retrieval", "--data", "x.jsonl", "--data-root", "d", "--anchor", "x")
    assert result.exit_code == 2 and "--data-root is what ${DATA_ROOT} means in a --suite" in result.output


def test_readme_everyday_commands_evaluate_the_folder_the_recipe_writes(fresh_registry):
    """The README's align line names a shipped recipe; eval and embed read that recipe's output folder."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = readme.split("## Everyday commands", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    align = next(line for line in block.splitlines() if line.startswith("modbind align"))
    recipe = load_recipe(re.search(r"--recipe (\S+)", align).group(1))
    export = f"{recipe.output.dir.as_posix()}/export"
    users = [line for line in block.splitlines() if line.startswith(("modbind eval", "modbind embed"))]
    assert users and all(line.split()[2] == export for line in users), (export, users)
    prepared = {m.group(1) for m in re.finditer(r"data prepare .* --out (\S+)", block)}
    assert re.search(r"manifest: (\S+?)\}", align).group(1) in prepared
    assert all(m.group(1) in prepared for m in re.finditer(r"--data (\S+)", block))


def _invoke(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("command", ["validate", "show"])
@pytest.mark.parametrize(("params", "message"), [
    ("{freq_msk: 10}", "unknown key 'train.augmentations.0.params.freq_msk' (did you mean 'freq_mask'?)"),
    ("{time_mask: -3}", "'train.augmentations.0.params.time_mask': Input should be greater than or equal to 0"),
    ("{n_time_masks: two}", "'train.augmentations.0.params.n_time_masks': Input should be a valid integer"),
])
def test_augmentation_params_are_checked_before_any_set_up(fresh_registry, tmp_path, command, params, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"train:\n  augmentations:\n    - {{name: spec_augment, params: {params}}}\n", encoding="utf-8")
    result = _invoke("recipe", command, str(recipe))
    assert result.exit_code == 2 and message in result.output, result.output


def test_show_fills_augmentation_params_with_their_defaults(fresh_registry, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  augmentations:\n    - {name: spec_augment, params: {freq_mask: '12'}}\n",
                      encoding="utf-8")
    result = _invoke("recipe", "show", str(recipe))
    assert result.exit_code == 0, result.output
    (entry,) = yaml.safe_load(result.output)["train"]["augmentations"]
    assert entry == {"name": "spec_augment", "params": {"freq_mask": 12, "time_mask": 96, "n_freq_masks": 1,
                                                       "n_time_masks": 1, "mask_value": 0.0}}


@pytest.mark.parametrize("command", ["validate", "show"])
@pytest.mark.parametrize(("task", "message"), [
    ("{task: retreival, data: x.jsonl}", "tasks.0.task: unknown evaluation task 'retreival'"),
    ("{task: retrieval, data: x.jsonl, options: {mach: labels}}", "tasks.0: options of task 'retrieval': unknown key 'mach'"),
    ("{task: zeroshot, data: x.jsonl, options: {template: 'no slot'}}",
     "tasks.0: options of task 'zeroshot': 'template': Value error, prompt template 'no slot' must contain exactly one"),
    ("{task: multilingual, data: x.jsonl, options: {of: zeroshot, match: id}}",
     "tasks.0: options of task 'multilingual': unknown key 'match'"),
    ("{task: multilingual, data: x.jsonl, options: {of: sorting}}", "'of' must be 'retrieval' or 'zeroshot'"),
    ("{task: anchor_baseline, data: x.jsonl, options: {tower: model}}", "'tower' is always 'image'"),
    ("{task: emergent, data: x.jsonl, options: {match: captions}}", "'match': Input should be 'id' or 'labels'"),
])
def test_eval_suite_tasks_and_options_are_checked_without_a_model(fresh_registry, tmp_path, command, task, message):
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  - {task}\n", encoding="utf-8")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"eval:\n  suite: {suite}\n", encoding="utf-8")
    result = _invoke("recipe", command, str(recipe))
    assert result.exit_code == 2 and message in result.output, result.output
    assert result.output.startswith(f"Error: eval.suite {suite}: tasks.0")


def test_align_fails_on_bad_augmentation_params_before_any_heavy_set_up(fresh_registry, tmp_path, monkeypatch):
    """Nothing is built or loaded (no anchor, no encoder, no DeepSpeed) before the recipe is fully checked."""
    import modbind.train.trainer as trainer

    def must_not_run(*args, **kwargs):
        raise AssertionError("training set-up started before the recipe was validated")

    monkeypatch.setattr(trainer, "run_alignment", must_not_run)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  augmentations:\n    - {name: spec_augment, params: {freq_msk: 10}}\n",
                      encoding="utf-8")
    result = _invoke("align", "--recipe", str(recipe), "--out", str(tmp_path / "run"))
    assert result.exit_code == 2 and "train.augmentations.0.params.freq_msk" in result.output
    assert not (tmp_path / "run").exists()


def test_shipped_recipes_and_suites_resolve_by_name_everywhere_a_file_is_taken(fresh_registry, tmp_path, monkeypatch):
    from modbind.suites import load_suite
    from modbind.recipes import find_shipped

    monkeypatch.chdir(tmp_path)  # far from the repository's recipes/ folder
    assert find_shipped("beats_basic") == find_shipped("beats_basic.yaml")
    assert find_shipped("beats_basic").read_bytes() == (REPO / "recipes" / "beats_basic.yaml").read_bytes()
    assert load_recipe("mae_lora").train.finetune == "lora"
    assert load_suite("paper").name == "CACARA tables"
    by_name = _invoke("recipe", "show", "htsat_basic")
    by_path = _invoke("recipe", "show", str(REPO / "recipes" / "htsat_basic.yaml"))
    assert by_name.exit_code == 0 and by_name.output == by_path.output
    # A path that exists wins over a shipped name.
    (tmp_path / "beats_basic").write_text("train:\n  batch_size: 8\n", encoding="utf-8")
    assert load_recipe("beats_basic").train.batch_size == 8


@pytest.mark.parametrize(("args", "message"), [
    (["recipe", "validate", "beats_basci"], "Error: recipe file not found: beats_basci, and no shipped recipe is "
     "called that (did you mean 'beats_basic'?); shipped: beats_basic, beats_expanded, beats_lora, demo,"),
    (["align", "--recipe", "htsat_lroa"], "(did you mean 'htsat_lora'?)"),
    (["eval", "--suite", "papr", "--anchor", "x"], "Error: suite file not found: papr, and no shipped suite is called "
     "that (did you mean 'paper'?); shipped: paper (`modbind recipe list`)"),
])
def test_an_unknown_recipe_name_lists_the_shipped_ones(fresh_registry, tmp_path, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    result = _invoke(*args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_recipe_list_shows_name_plugin_and_description(fresh_registry):
    from modbind.recipes import shipped

    result = _invoke("recipe", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "recipes:" and "suites:" in lines
    rows = {line.split()[0]: line.split(None, 2)[1:] for line in lines if line.startswith("  ")}
    assert set(rows) == set(shipped("recipe")) | set(shipped("suite"))
    assert rows["beats_basic"] == ["audio_beats", "BEATs, paper basic setting: batch 64, full fine-tune."]
    assert rows["mae_lora"][0] == "audio_mae" and rows["paper"][0] == "-"
    assert rows["demo"][1].startswith("The alignment settings `modbind demo` trains with")
