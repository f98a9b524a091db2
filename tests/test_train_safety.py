"""What a run folder or a manifest cannot make the trainer do: run code, read outside the data, die on a torn
file, fill the disk with checkpoints or leave shared memory behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from modbind.config import Recipe
from modbind.errors import CheckpointError, ConfigError, NonFiniteError, UnsafePathError
from modbind.train.checkpoints import LATEST_FILE, checkpoint_tags, prune_checkpoints
import modbind
from modbind.train.trainer import StepReport, read_step
from train_world import imu_recipe, imu_run, imu_world

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return imu_world(tmp_path_factory.mktemp("safety_world"), 32)


recipe_for = imu_run


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
        modbind.align(Recipe.model_validate(settings), progress=False)

    absolute = outside_manifest(world, tmp_path / "abs", str(secret))
    settings = imu_recipe(world["anchor"], absolute, tmp_path / "run", max_steps=2)
    settings["data"]["val"] = [{"manifest": str(absolute)}]
    with pytest.raises(UnsafePathError, match=r"train.jsonl:3: absolute path .* data.train\[0\].allow_absolute_paths"):
        modbind.align(Recipe.model_validate(settings), progress=False)
    settings["data"]["train"][0]["allow_absolute_paths"] = True
    with pytest.raises(UnsafePathError, match=r"data.val\[0\].allow_absolute_paths"):
        modbind.align(Recipe.model_validate(settings), progress=False)


def test_allowed_absolute_paths_train(world, imu_plugin, tmp_path) -> None:
    manifest = outside_manifest(world, tmp_path, str(world["manifest"].parent / "imu2.npy"))
    settings = imu_recipe(world["anchor"], manifest, tmp_path / "run", max_steps=2)
    settings["data"]["train"][0]["allow_absolute_paths"] = True
    result = modbind.align(Recipe.model_validate(settings), progress=False)
    assert result.steps == 2 and result.skipped == 0


class Crash(RuntimeError):
    pass


def crash_after(step: int):
    def on_step(report: StepReport) -> None:
        if report.step == step:
            raise Crash("killed")
    return on_step


def test_resume_never_unpickles_a_planted_checkpoint(world, imu_plugin, tmp_path) -> None:
    recipe = recipe_for(world, "planted", max_steps=4, checkpoint_every=2)
    with pytest.raises(Crash):
        modbind.align(recipe, progress=False, on_step=crash_after(3))
    marker = tmp_path / "marker"

    class Payload:  # unpickling it calls open(marker, "w"): any code could stand here
        def __reduce__(self):
            return open, (str(marker), "w")

    planted = recipe.output.dir / "checkpoints" / "step00000002" / "mp_rank_00_model_states.pt"
    torch.save({"module": Payload()}, planted)
    with pytest.raises(CheckpointError, match=r"refusing to load .*mp_rank_00_model_states.pt: it contains the "
                                              r"object '(builtins|io).open'.*delete .*step00000002"):
        modbind.align(recipe, resume=True, progress=False)
    assert not marker.exists()


@pytest.mark.parametrize("stage", [1, 2])
def test_zero_stage_checkpoints_resume_safely_and_exactly(world, imu_plugin, stage) -> None:
    """ZeRO 1/2 optimizer files hold DeepSpeed's own records; they load under the allow-list, resuming exactly."""
    straight = modbind.align(recipe_for(world, f"straight-zero{stage}", max_steps=4, zero_stage=stage),
                             progress=False)
    recipe = recipe_for(world, f"resumed-zero{stage}", max_steps=4, zero_stage=stage, checkpoint_every=2)
    with pytest.raises(Crash):
        modbind.align(recipe, progress=False, on_step=crash_after(3))
    resumed = modbind.align(recipe, resume=True, progress=False)
    np.testing.assert_allclose(resumed.history, straight.history[2:], rtol=1e-4, atol=1e-5)


def test_a_truncated_latest_checkpoint_falls_back_to_the_one_before(world, imu_plugin, capsys) -> None:
    straight = modbind.align(recipe_for(world, "whole", max_steps=4), progress=False)
    recipe = recipe_for(world, "truncated", max_steps=4, checkpoint_every=2)
    with pytest.raises(Crash):
        modbind.align(recipe, progress=False, on_step=crash_after(4))  # after step 4's checkpoint was written
    checkpoints = recipe.output.dir / "checkpoints"
    assert (checkpoints / LATEST_FILE).read_text().strip() == "step00000004"
    damaged = checkpoints / "step00000004" / "mp_rank_00_model_states.pt"
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a power cut mid-write
    capsys.readouterr()
    resumed = modbind.align(recipe, resume=True, progress=False)
    warning = capsys.readouterr().err
    assert "step00000004 is damaged" in warning and "resuming from" in warning and "step00000002" in warning
    np.testing.assert_allclose(resumed.history, straight.history[2:], rtol=1e-4, atol=1e-5)

    for tag in checkpoint_tags(checkpoints):  # nothing whole left: a clear error, no zip-reader traceback
        model_file = checkpoints / tag / "mp_rank_00_model_states.pt"
        model_file.write_bytes(model_file.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"is damaged .*no earlier complete checkpoint"):
        modbind.align(recipe, resume=True, progress=False)


def test_old_checkpoints_are_pruned_after_each_save(world, imu_plugin) -> None:
    recipe = recipe_for(world, "pruned", max_steps=5, checkpoint_every=1, keep_checkpoints=2)
    modbind.align(recipe, progress=False)
    checkpoints = recipe.output.dir / "checkpoints"
    assert checkpoint_tags(checkpoints) == ["step00000004", "step00000005"]
    assert (checkpoints / LATEST_FILE).read_text().strip() == "step00000005"
    assert not [p for p in checkpoints.iterdir() if p.name.startswith(".tmp")]


def test_pruning_keeps_latest_and_leaves_newer_stale_checkpoints(tmp_path) -> None:
    for step in range(1, 6):
        (tmp_path / f"step{step:08d}").mkdir()
    (tmp_path / LATEST_FILE).write_text("step00000003\n")  # a run that resumed from step 3 (4, 5 were damaged)
    assert prune_checkpoints(tmp_path, keep=2) == ["step00000001"]
    assert checkpoint_tags(tmp_path) == ["step00000002", "step00000003", "step00000004", "step00000005"]
    assert prune_checkpoints(tmp_path, keep=1) == ["step00000002"]
    with pytest.raises(ConfigError, match="keep_checkpoints"):
        from modbind.recipes import load_recipe

        load_recipe(None, ["train.keep_checkpoints=0"])


def test_engine_set_up_errors_are_one_line(world, imu_plugin) -> None:
    recipe = recipe_for(world, "bad-backend", max_steps=1, compile=True, compile_backend="no_such_backend")
    with pytest.raises(ConfigError, match=r"^DeepSpeed could not set up training \(.*no_such_backend") as err:
        modbind.align(recipe, progress=False)
    assert "\n" not in str(err.value)


def test_a_torn_metrics_line_is_dropped_on_resume(world, imu_plugin, capsys) -> None:
    recipe = recipe_for(world, "torn", max_steps=4, checkpoint_every=2)
    with pytest.raises(Crash):
        modbind.align(recipe, progress=False, on_step=crash_after(3))
    metrics = recipe.output.dir / "metrics.jsonl"
    with metrics.open("a", encoding="utf-8") as handle:
        handle.write('{"time": 1.5, "step": 3, "lo')  # the append a crash cut short
    capsys.readouterr()
    result = modbind.align(recipe, resume=True, progress=False)
    assert result.steps == 4
    assert "dropped 1 unreadable line" in capsys.readouterr().err
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2, 3, 4]


def shm_segments(port: int) -> list[str]:
    """DeepSpeed's shared-memory segments named after this MASTER_PORT (other runs on the machine use others)."""
    return [name for name in os.listdir("/dev/shm") if name.startswith("deepspeed") and f"_{port}_" in name]


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm on this system")
def test_align_leaves_nothing_in_shared_memory(world, imu_plugin, tmp_path) -> None:
    """A successful run, a run refused before DeepSpeed starts and one failing after it leave no segment."""
    from modbind.train.engine import free_port

    good = imu_recipe(world["anchor"], world["manifest"], tmp_path / "good", max_steps=1)
    missing = imu_recipe(world["anchor"], tmp_path / "missing.jsonl", tmp_path / "missing", max_steps=1)
    late = imu_recipe(world["anchor"], world["manifest"], tmp_path / "late", max_steps=1, batch_size=64)
    for name, settings, status in (("good", good, 0), ("missing", missing, 2), ("late", late, 2)):
        recipe_file = tmp_path / f"{name}.yaml"
        recipe_file.write_text(yaml.safe_dump(settings))
        port = free_port()
        env = {**os.environ, "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        run = subprocess.run([sys.executable, "-m", "modbind.cli.main", "align", "--recipe", str(recipe_file),
                              "--no-progress"], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == status, run.stdout + run.stderr
        assert shm_segments(port) == [], name


def test_a_diverging_run_stops_naming_the_step_keeps_its_checkpoint_and_exports_nothing(world, imu_plugin) -> None:
    import re

    recipe = recipe_for(world, "diverging", max_steps=6, checkpoint_every=1,
                        optimizer={"lr": 1e30, "min_lr": 0.0, "warmup_steps": 0})
    with pytest.raises(NonFiniteError, match=r"^step \d: the loss is nan; training diverged \(e.g. "
                                             r"train.optimizer.lr 1e\+30 is too high.*; the newest checkpoint, .*, "
                                             r"was written before it") as err:
        modbind.align(recipe, progress=False)  # the first steps push the weights to ~1e31: a forward overflows
    step = int(re.match(r"step (\d)", str(err.value)).group(1))
    checkpoints = recipe.output.dir / "checkpoints"
    assert 1 < step < 6 and f"step{step - 1:08d}" in str(err.value)
    assert (checkpoints / LATEST_FILE).read_text().strip() == f"step{step - 1:08d}"
    assert not (recipe.output.dir / "export").exists()
    with pytest.raises(NonFiniteError, match=rf"^step {step}: the loss is nan"):  # the good checkpoint resumes
        modbind.align(recipe, resume=True, progress=False)

    from modbind.recipes import load_recipe

    with pytest.raises(ConfigError, match=r"lr 1e\+38 makes Adam's first step .* beyond float32's range"):
        load_recipe(None, ["train.optimizer.lr=1e38"])  # torch's Adam would crash on its first step


class TwoWeights(torch.nn.Module):
    """A trained weight, a frozen one and the temperature: what the step read looks at."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(3))
        self.frozen = torch.nn.Parameter(torch.full((2,), float("nan")), requires_grad=False)
        self.log_logit_scale = torch.nn.Parameter(torch.tensor(2.0))

    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp()


def test_the_step_read_names_a_nonfinite_trained_weight_and_only_that() -> None:
    model = TwoWeights()
    trained = [p for p in model.parameters() if p.requires_grad]
    loss, scale, culprit = read_step(torch.tensor(1.5), model, trained)
    assert (loss, culprit) == (1.5, None) and scale == pytest.approx(np.exp(2.0))  # a frozen NaN is not trained
    with torch.no_grad():
        model.weight.fill_(1e30)  # finite, though its square overflows float32: the scan clears it
    assert read_step(torch.tensor(1.5), model, trained)[2] is None
    with torch.no_grad():
        model.weight[1] = float("inf")
    loss, _, culprit = read_step(torch.tensor(float("nan")), model, trained)
    assert np.isnan(loss) and culprit == "weight"


@pytest.mark.parametrize("stage", [0, 2])
def test_a_nonfinite_gradient_under_a_finite_loss_stops_the_run(world, imu_plugin, monkeypatch, stage) -> None:
    """An infinite gradient reaching the temperature at step 3 while every loss stays finite."""
    from modbind.train import trainer

    real_loss, calls = trainer.symmetric_info_nce, []

    def loss_with_an_infinite_gradient_at_step_3(modality, text, logit_scale):
        calls.append(1)
        loss = real_loss(modality, text, logit_scale)
        if len(calls) == 3:  # sqrt at 0: adds 0 to the loss, and an infinite gradient to the temperature
            loss = loss + torch.sqrt(logit_scale - logit_scale.detach()).sum()
        return loss

    monkeypatch.setattr(trainer, "symmetric_info_nce", loss_with_an_infinite_gradient_at_step_3)
    recipe = recipe_for(world, f"inf-grad-zero{stage}", max_steps=6, zero_stage=stage, checkpoint_every=2)
    expected = (r"^step 3: the update made parameter 'log_logit_scale' NaN or infinite" if stage == 0
                else r"^step 3: the gradient is NaN or infinite \(the update was skipped\)")
    with pytest.raises(NonFiniteError, match=expected + r".*the newest checkpoint, .*step00000002, was written"):
        modbind.align(recipe, progress=False)
    assert checkpoint_tags(recipe.output.dir / "checkpoints") == ["step00000002"]
    assert not (recipe.output.dir / "export").exists()


FIRST_RUN = """
import json, sys
from pathlib import Path

spawned = []
sys.addaudithook(lambda event, args: spawned.append(Path(str(args[1][0])).name)
                 if event == "subprocess.Popen" and args[1] else None)

from deepspeed.ops.op_builder.builder import OpBuilder

def refuse(self, *args, **kwargs):
    raise AssertionError(f"DeepSpeed built its {self.name} op")

OpBuilder.load = OpBuilder.jit_load = refuse

import modbind
from modbind.config import Recipe

for settings in json.loads(sys.argv[1]):
    modbind.align(Recipe.model_validate(settings), progress=False)
print("SPAWNED", json.dumps(spawned))
"""


def test_a_first_cpu_run_builds_no_deepspeed_op_and_runs_no_compiler(world, imu_plugin, tmp_path) -> None:
    """In a fresh process (as a user's first run): ZeRO 0 and 2, fp32 and bf16 load no op and spawn no compiler."""
    runs = [imu_recipe(world["anchor"], world["manifest"], tmp_path / name, max_steps=2, **train)
            for name, train in (("zero0", {}), ("zero2", {"zero_stage": 2}),
                                ("bf16", {"zero_stage": 1, "precision": "bf16"}))]
    from modbind.train.engine import free_port

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_EXTENSIONS_DIR": str(tmp_path / "torch_extensions"),
           "MASTER_PORT": str(free_port())}  # this process's own group holds the port it left in the env
    run = subprocess.run([sys.executable, "-c", FIRST_RUN, json.dumps(runs, default=str)], env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    spawned = json.loads(run.stdout.split("SPAWNED ", 1)[1])
    compilers = {"gcc", "g++", "cc", "c++", "clang", "clang++", "ld", "ninja", "nvcc", "x86_64-linux-gnu-gcc"}
    assert not compilers & set(spawned), spawned
    assert not (tmp_path / "torch_extensions").exists()  # where a JIT build would have gone
    assert "-laio" not in run.stderr and "Building extension" not in run.stdout
