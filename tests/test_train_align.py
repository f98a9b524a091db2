"""The alignment trainer end to end on the CPU: tiny anchor, the third-party IMU plugin, DeepSpeed (1 process)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from train_world import captions, imu_recipe, imu_run, imu_world, write_imu_world

import modbind
from modbind.config import Recipe, TrainConfig
from modbind.errors import ConfigError, DataError
from modbind.train.engine import Engine, compiles, deepspeed_config, init_distributed
from modbind.train.trainer import StepReport

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return imu_world(tmp_path_factory.mktemp("align_world"), 64)


recipe_for = imu_run


def metrics(run: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_deepspeed_config_carries_the_recipe() -> None:
    train = TrainConfig(batch_size=64, gradient_accumulation=2, precision="bf16", zero_stage=2)
    config = deepspeed_config(train, world=2, total_steps=1000)
    assert config["train_micro_batch_size_per_gpu"] == 16
    assert config["optimizer"]["params"]["betas"] == [0.9, 0.98]
    assert config["optimizer"]["params"]["weight_decay"] == 1e-6
    assert config["optimizer"]["params"]["fused"] and not config["optimizer"]["params"]["foreach"]
    assert not deepspeed_config(train, world=2, total_steps=1000, device_type="mps")["optimizer"]["params"]["fused"]
    assert config["scheduler"]["params"]["cos_min_ratio"] == pytest.approx(1e-5 / 5e-5)
    assert config["scheduler"]["params"]["warmup_num_steps"] == 500
    assert config["torch_autocast"] == {"enabled": True, "dtype": "bfloat16"} and "bf16" not in config
    assert not config["fp16"]["enabled"] and config["zero_optimization"]["stage"] == 2
    with pytest.raises(ConfigError, match="multiple of 6"):
        deepspeed_config(TrainConfig(batch_size=64, gradient_accumulation=2), world=3, total_steps=10)


def test_compile_auto_means_on_cuda() -> None:
    assert compiles(TrainConfig(), "cuda") and not compiles(TrainConfig(), "cpu")
    assert compiles(TrainConfig(compile=True), "cpu") and not compiles(TrainConfig(compile=False), "cuda")


def test_one_cpu_process_skips_deepspeeds_shared_memory_op() -> None:
    """No peer to all-reduce with: no op to load at start-up and no buffers left in /dev/shm."""
    code = ("from modbind.train.engine import init_distributed; init_distributed(); "
            "import deepspeed.comm.comm as comm; print('op', comm.cdb.shm_comm_op)")
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "op None" in done.stdout


def test_engine_runs_torch_fused_adam_on_the_cpu() -> None:
    init_distributed()
    engine = Engine(torch.nn.Linear(4, 4), TrainConfig(batch_size=2), world=1, total_steps=10)
    optimizer = engine._engine.optimizer
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["fused"] and not optimizer.defaults["foreach"]
def test_a_global_batch_of_one_is_refused_when_the_recipe_is_read() -> None:
    from modbind.recipes import load_recipe

    with pytest.raises(ConfigError, match=r"train.batch_size.*batch of 1 gives InfoNCE no negatives"):
        load_recipe(None, ["train.batch_size=1"])
    assert load_recipe(None, ["train.batch_size=2"]).train.batch_size == 2


def test_few_hundred_steps_drive_infonce_far_below_log_batch(world, imu_plugin) -> None:
    recipe = recipe_for(world, "converge", max_steps=240)
    result = modbind.align(recipe, progress=False)
    chance = math.log(16)
    assert result.steps == 240
    assert np.mean(result.history[:5]) > 0.8 * chance
    assert np.mean(result.history[-20:]) < 0.25 * chance, result.history[-20:]
    records = metrics(result.out_dir)
    assert all({"event", "step", "time"} <= set(r) for r in records)  # every line says what it records
    documented = (Path(__file__).parents[1] / "docs" / "recipes.md").read_text(encoding="utf-8")
    assert all(f"| `{r['event']}` |" in documented for r in records)
    steps = [r for r in records if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 241)) and all("loss" in r for r in steps)
    # warm-up then cosine from lr to min_lr
    assert steps[2]["lr"] < steps[5]["lr"] and steps[-1]["lr"] == pytest.approx(3e-4, rel=1e-3)
    epochs = [r for r in records if r.get("event") == "epoch_end"]
    assert len(epochs) == 60 and all(r["skipped"] == 0 and r["seen"] == 64 for r in epochs)
    card = json.loads((result.export_dir / "card.json").read_text())
    assert card["plugin"] == "imu_conv" and card["metrics"]["steps"] == 240
    assert (result.out_dir / "recipe.yaml").is_file()


def test_a_warm_caption_cache_trains_without_loading_the_anchor(world, imu_plugin, monkeypatch) -> None:
    """The cache records what training needs from the anchor (dim, logit scale), so a warm start skips it."""
    loads: list[int] = []
    import modbind.anchor

    real_load = modbind.anchor.load_anchor

    def counted_load(*args, **kwargs):
        loads.append(1)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(modbind.anchor, "load_anchor", counted_load)
    runs, cards = {}, {}
    for name in ("cold", "warm"):
        recipe = recipe_for(world, name, max_steps=3)
        recipe.data.caption_cache = world["root"] / "own-caption-cache"
        runs[name] = modbind.align(recipe, progress=False)
        cards[name] = json.loads((runs[name].export_dir / "card.json").read_text())
        loads.append(name)
    assert loads == [1, "cold", "warm"]  # the cold run filled the cache with the anchor; the warm one never loaded it
    assert runs["warm"].history == runs["cold"].history  # same dim and initial temperature, same training
    assert cards["warm"]["anchor_identity"] == cards["cold"]["anchor_identity"]


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_mid_epoch_continues_exactly(world, imu_plugin) -> None:
    """4 steps per epoch: checkpoint at step 6 (mid-epoch 1), crash after step 7, resume → steps 7..10 match."""
    straight = modbind.align(recipe_for(world, "straight", max_steps=10), progress=False)

    def crash_after_7(report: StepReport) -> None:
        if report.step == 7:
            raise Crash("killed")

    recipe = recipe_for(world, "crashy", max_steps=10, checkpoint_every=6)
    with pytest.raises(Crash):
        modbind.align(recipe, progress=False, on_step=crash_after_7)
    with pytest.raises(ConfigError, match="--resume"):
        modbind.align(recipe, progress=False)
    resumed = modbind.align(recipe, resume=True, progress=False)
    assert len(resumed.history) == 4
    np.testing.assert_allclose(resumed.history, straight.history[6:], rtol=1e-4, atol=1e-5)
    logged = [r["step"] for r in metrics(recipe.output.dir) if "loss" in r]
    assert logged == list(range(1, 11))  # the crashed run's step 7 was dropped, not duplicated


def test_lora_trains_only_adapters_head_and_temperature(world, imu_plugin) -> None:
    from modbind.model import AlignedEncoder
    from modbind.plugins import get_registry
    from modbind.train.finetune import apply_finetune

    recipe = recipe_for(world, "lora", max_steps=6, finetune="lora", lora={"r": 4, "alpha": 8, "dropout": 0.0})
    plugin = get_registry().encoder("imu_conv")
    options = plugin.options(recipe.plugin.options)
    torch.manual_seed(0)
    reference = AlignedEncoder(plugin.build_encoder(options), 32)
    before = {k: v.clone() for k, v in reference.encoder.state_dict().items()}
    summary = apply_finetune(reference, plugin, options, recipe.train)
    lora_params = sum(p.numel() for n, p in reference.named_parameters() if "lora_" in n)
    head_params = sum(p.numel() for p in reference.head.parameters())
    assert summary.trainable == lora_params + head_params + 1
    assert lora_params == (4 * 6 * 5 + 32 * 4) + (4 * 32 * 5 + 32 * 4)  # A: r×in×kernel, B: out×r, per conv
    trainable = {n for n, p in reference.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("head.") or n == "log_logit_scale" for n in trainable)

    result = modbind.align(recipe, progress=False)
    assert [r for r in metrics(result.out_dir) if r.get("event") == "start"][0]["trainable_parameters"] == summary.trainable

    exported = modbind.load(result.export_dir).encoder.state_dict()
    # frozen base weights: the exported (LoRA-merged) conv differs from the initial one only by B·A,
    # and every weight LoRA does not touch (biases) is bit-identical
    for name, value in before.items():
        if name.endswith("bias"):
            torch.testing.assert_close(exported[name], value, rtol=0, atol=0)
    assert any(not torch.equal(exported[n], before[n]) for n in before if n.endswith("0.weight"))


def test_unreadable_items_are_counted_per_epoch_and_stop_the_run_past_the_limit(world, imu_plugin, tmp_path) -> None:
    texts = captions(64)
    manifest = write_imu_world(tmp_path / "imu", texts)
    for i in range(4):
        (tmp_path / "imu" / f"imu{i}.npy").write_bytes(b"corrupt")
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "tolerant", max_steps=4)
    settings["data"]["max_skip_fraction"] = 0.1
    result = modbind.align(Recipe.model_validate(settings), progress=False)
    [epoch] = [r for r in metrics(result.out_dir) if r.get("event") == "epoch_end"]
    assert (epoch["seen"], epoch["skipped"]) == (64, 4) and "imu" in epoch["skipped_examples"][0]
    assert result.skipped == 4

    settings = imu_recipe(world["anchor"], manifest, tmp_path / "strict", max_steps=4)
    settings["data"]["max_skip_fraction"] = 0.02
    with pytest.raises(DataError, match=r"\d of the epoch's 64 items could not be read .*more than "
                                        r"data.max_skip_fraction=0.02"):
        modbind.align(Recipe.model_validate(settings), progress=False)


def test_resume_refuses_a_changed_recipe(world, imu_plugin) -> None:
    recipe = recipe_for(world, "changed", max_steps=2)
    modbind.align(recipe, progress=False)
    changed = recipe_for(world, "changed", max_steps=2, batch_size=8)
    with pytest.raises(ConfigError, match=r"differs from .*recipe.yaml in train.batch_size"):
        modbind.align(changed, resume=True, progress=False)
    other_machine = recipe_for(world, "changed", max_steps=2, threads=1)  # a machine setting, not the run's
    assert modbind.align(other_machine, resume=True, progress=False).steps == 2


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stages_follow_the_same_trajectory_as_stage_0(world, imu_plugin, stage) -> None:
    plain = modbind.align(recipe_for(world, f"zero0-{stage}", max_steps=4), progress=False)
    sharded = modbind.align(recipe_for(world, f"zero{stage}", max_steps=4, zero_stage=stage), progress=False)
    np.testing.assert_allclose(sharded.history, plain.history, rtol=1e-4, atol=1e-5)


def test_stage_0_clips_in_the_engine_exactly_as_deepspeed_does_under_zero_2(world, imu_plugin) -> None:
    """Stage 0 clips with torch's fused clip_grad_norm_ in Engine.step; ZeRO 2 clips inside DeepSpeed. With a
    clip that binds on every step the two agree, and both differ from the unclipped run."""
    # Adam is nearly blind to a gradient's scale: only a clip that binds on some steps and not on others
    # changes its path, so the clip sits between the gradient norms of the first steps
    tight = {"grad_clip": 0.5, "warmup_steps": 0}
    own = modbind.align(recipe_for(world, "clip-own", max_steps=6, optimizer=tight), progress=False)
    inside = modbind.align(recipe_for(world, "clip-ds", max_steps=6, zero_stage=2, optimizer=tight), progress=False)
    free = modbind.align(recipe_for(world, "clip-none", max_steps=6, optimizer={**tight, "grad_clip": None}),
                         progress=False)
    np.testing.assert_allclose(own.history, inside.history, rtol=1e-4, atol=1e-5)
    assert not np.allclose(own.history, free.history, rtol=1e-3, atol=1e-4), (own.history, free.history)
    assert deepspeed_config(recipe_for(world, "x", optimizer=tight).train, 1, 4)["gradient_clipping"] == 0.0


@pytest.mark.parametrize("stage", [0, 2])
def test_bf16_runs_the_forward_in_bf16_and_keeps_float32_weights(world, imu_plugin, monkeypatch, stage) -> None:
    from safetensors.torch import load_file

    output_dtypes: set[torch.dtype] = set()
    linear_forward = torch.nn.Linear.forward

    def recording_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
        out = linear_forward(self, x)
        output_dtypes.add(out.dtype)
        return out

    monkeypatch.setattr(torch.nn.Linear, "forward", recording_forward)
    recipe = recipe_for(world, f"bf16-zero{stage}", max_steps=60, precision="bf16", zero_stage=stage)
    result = modbind.align(recipe, progress=False)
    assert output_dtypes == {torch.bfloat16}
    assert np.mean(result.history[-10:]) < 0.6 * np.mean(result.history[:5]), result.history
    weights = load_file(str(result.export_dir / "model.safetensors"))
    assert {t.dtype for t in weights.values() if t.is_floating_point()} == {torch.float32}


def test_compiled_model_follows_the_eager_trajectory_and_exports(world, imu_plugin, monkeypatch) -> None:
    from torch._dynamo.utils import counters

    import modbind

    counters.clear()
    plain = modbind.align(recipe_for(world, "not-compiled", max_steps=4), progress=False)  # auto: no compile on CPU
    assert counters["stats"]["unique_graphs"] == 0
    compiles: list[dict] = []
    real_compile = torch.compile

    def recorded_compile(*args, **kwargs):
        compiles.append(kwargs)
        return real_compile(*args, **kwargs)

    monkeypatch.setattr(torch, "compile", recorded_compile)
    compiled = modbind.align(recipe_for(world, "compiled", max_steps=4, compile=True, compile_backend="eager",
                                        compile_mode="reduce-overhead"), progress=False)
    assert counters["stats"]["unique_graphs"] > 0  # dynamo really captured the model's forward
    assert [(c["backend"], c["mode"]) for c in compiles] == [("eager", "reduce-overhead")]
    np.testing.assert_allclose(compiled.history, plain.history, rtol=1e-5, atol=1e-6)
    from safetensors.torch import load_file

    keys = set(load_file(str(compiled.export_dir / "model.safetensors")))
    assert keys == set(load_file(str(plain.export_dir / "model.safetensors")))  # no compile wrapper prefixes
    assert modbind.load(compiled.export_dir).card["plugin"] == "imu_conv"  # loads strictly


def test_rows_without_a_training_caption_are_counted_per_source(world, imu_plugin, tmp_path, capsys) -> None:
    lines = world["manifest"].read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    for row in rows[:6]:
        row["captions"] = {"de": ["nur deutsch"]}
    manifest = world["manifest"].parent / "partly_german.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "run", max_steps=1)
    settings["data"]["val"] = [{"manifest": str(world["manifest"])}]
    capsys.readouterr()
    result = modbind.align(Recipe.model_validate(settings), progress=False)
    err = capsys.readouterr().err
    assert f"data.train[0] ({manifest}): 6 of 64 rows have no 'en' caption (data.caption_language)" in err
    assert "data.val[0]" not in err  # every val row has one
    [start] = [r for r in metrics(result.out_dir) if r["event"] == "start"]
    assert start["without_caption"] == {"data.train[0]": 6, "data.val[0]": 0}


def test_a_run_that_reads_no_item_fails_and_exports_nothing(world, imu_plugin, tmp_path) -> None:
    manifest = tmp_path / "gone" / "train.jsonl"
    manifest.parent.mkdir()
    manifest.write_text(world["manifest"].read_text(encoding="utf-8"), encoding="utf-8")  # no .npy beside it
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "limited", max_steps=3)
    with pytest.raises(DataError, match=r"16 of the epoch's 64 items could not be read"):
        modbind.align(Recipe.model_validate(settings), progress=False)  # the skip limit stops it at step 1
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "unlimited", max_steps=3)
    settings["data"]["max_skip_fraction"] = 1.0
    with pytest.raises(DataError, match=r"no training item could be read in 3 steps: all 48 items drawn were "
                                        r"skipped \(e.g. .*imu\d+.npy.*nothing is exported"):
        modbind.align(Recipe.model_validate(settings), progress=False)
    assert not (tmp_path / "unlimited" / "export").exists()


def test_a_run_records_the_anchor_it_loaded_not_an_ignored_tag(world, imu_plugin, tmp_path) -> None:
    import yaml

    settings = imu_recipe(world["anchor"], world["manifest"], tmp_path / "run", max_steps=1)
    settings["anchor"]["pretrained"] = "laion5b_s13b_b90k"  # the recipe default; a local-dir: folder ignores it
    result = modbind.align(Recipe.model_validate(settings), progress=False)
    card = json.loads((result.export_dir / "card.json").read_text())
    assert card["anchor"] == {**card["anchor"], "model": f"local-dir:{world['anchor']}", "pretrained": None}
    assert card["recipe"]["anchor"]["pretrained"] is None
    assert yaml.safe_load((result.out_dir / "recipe.yaml").read_text())["anchor"]["pretrained"] is None
    assert modbind.load(result.export_dir).anchor.identity == card["anchor_identity"]


def test_resume_extend_trains_a_finished_run_further_at_min_lr(world, imu_plugin, tmp_path) -> None:
    import yaml
    from click.testing import CliRunner

    from modbind.cli.main import cli

    first = recipe_for(world, "extended", max_steps=4, checkpoint_every=1)  # one epoch of 4 steps
    modbind.align(first, progress=False)
    longer = recipe_for(world, "extended", max_steps=8, checkpoint_every=1)
    with pytest.raises(ConfigError, match=r"differs from .* in train.max_steps; .*add --extend"):
        modbind.align(longer, resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"--extend .* together with --resume"):
        modbind.align(longer, extend=True, progress=False)
    with pytest.raises(ConfigError, match=r"--extend: the recipe trains 4 steps, but the run .* already has 4"):
        modbind.align(first, resume=True, extend=True, progress=False)
    with pytest.raises(ConfigError, match=r"differs from .* in train.batch_size"):
        modbind.align(recipe_for(world, "extended", max_steps=8, batch_size=8), resume=True, extend=True,
                      progress=False)

    recipe_file = tmp_path / "first.yaml"
    recipe_file.write_text(yaml.safe_dump(first.model_dump(mode="json")))
    cli_run = CliRunner().invoke(cli, ["align", "--recipe", str(recipe_file), "--resume", "--extend",
                                       "--set", "train.max_steps=8", "--no-progress"])
    assert cli_run.exit_code == 0, cli_run.output
    assert "trained 8 steps" in cli_run.output
    steps = [r for r in metrics(first.output.dir) if r["event"] == "step"]
    assert [r["step"] for r in steps] == list(range(1, 9))
    # the schedule planned for 4 steps ends at min_lr; the added steps stay there
    assert steps[1]["lr"] > steps[3]["lr"] and all(r["lr"] == pytest.approx(3e-4) for r in steps[3:])
    assert json.loads((first.output.dir / "export" / "card.json").read_text())["metrics"]["steps"] == 8

    # the kept schedule survives a crash inside the extension: resuming it continues exactly
    again = recipe_for(world, "extended-again", max_steps=4, checkpoint_every=1)
    modbind.align(again, progress=False)

    def crash_after_6(report: StepReport) -> None:
        if report.step == 6:
            raise Crash("killed")

    with pytest.raises(Crash):
        modbind.align(again, ["train.max_steps=8"], resume=True, extend=True, progress=False, on_step=crash_after_6)
    resumed = modbind.align(again, ["train.max_steps=8"], resume=True, progress=False)  # recipe.yaml says 8 now
    np.testing.assert_allclose(resumed.history, [r["loss"] for r in steps[6:]], rtol=1e-5, atol=1e-6)


def test_a_fixed_logit_scale_stays_where_the_recipe_puts_it(world, imu_plugin) -> None:
    recipe = recipe_for(world, "fixed_scale", max_steps=3, logit_scale=7.0, learn_logit_scale=False)
    result = modbind.align(recipe, progress=False)
    logged = [m["logit_scale"] for m in metrics(result.out_dir) if "logit_scale" in m]
    assert len(logged) == 3 and logged == pytest.approx([7.0] * 3)
    assert modbind.load(result.export_dir).logit_scale == pytest.approx(7.0)
    learned = modbind.align(recipe_for(world, "learned_scale", max_steps=3, logit_scale=7.0), progress=False)
    assert modbind.load(learned.export_dir).logit_scale != pytest.approx(7.0, abs=1e-4)
