"""`modbind align` with a tiny BEATs on generated audio: CLI run, export, warm caption cache, LoRA + checkpointing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from click.testing import CliRunner

import modbind
from modbind.cli.main import cli
from modbind.recipes import load_recipe
from train_world import build_separating_anchor, captions, write_audio_world

pytestmark = pytest.mark.usefixtures("one_thread")




def beats_recipe(tmp_path: Path) -> Path:
    texts = captions(16, seed=4)
    anchor = build_separating_anchor(tmp_path / "anchor", texts)
    manifest = write_audio_world(tmp_path / "audio", texts, seconds=1.0)
    recipe = {
        "anchor": {"model": f"local-dir:{anchor}", "pretrained": None},
        "plugin": {"name": "audio_beats", "options": {"size": "tiny", "clip_seconds": 1.0}},
        "data": {"train": [{"manifest": str(manifest)}], "num_workers": 1,
                 "caption_cache": str(tmp_path / "caption-cache")},
        "train": {"batch_size": 8, "max_steps": 3, "precision": "fp32", "log_every": 1,
                  "optimizer": {"lr": 1e-3, "warmup_steps": 1}},
    }
    path = tmp_path / "tiny_beats.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_align_cli_trains_tiny_beats_and_exports_a_loadable_model(tmp_path: Path) -> None:
    recipe_file = beats_recipe(tmp_path)
    with (tmp_path / "audio" / "train.jsonl").open("a") as manifest:
        manifest.write(json.dumps({"id": "pt-only", "path": "clip0.wav", "captions": {"pt": ["um sino toca"]}}) + "\n")
    out = tmp_path / "run"
    result = CliRunner().invoke(cli, ["align", "--plugin", "audio_beats", "--recipe", str(recipe_file),
                                      "--set", "train.seed=1", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "train.jsonl): 1 of " in result.output and "rows have no 'en' caption (data.caption_language)" in result.output
    assert "trained 3 steps" in result.output and str(out / "export") in result.output
    # no checkpoint named: the run says it trains from random weights, in the log and the card too
    assert ("plugin.options.checkpoint is null, so the audio_beats encoder starts from random weights" in result.output
            and "set plugin.options.checkpoint to one of `modbind checkpoints` (e.g. beats-" in result.output)
    start = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert start["event"] == "start" and start["encoder_init"] == "random"
    card = json.loads((out / "export" / "card.json").read_text())
    assert card["encoder_init"] == "random"
    assert card["plugin"] == "audio_beats" and card["plugin_options"]["size"] == "tiny"
    assert card["recipe"]["train"]["seed"] == 1

    model = modbind.load(out / "export")
    clips = sorted((tmp_path / "audio").glob("*.wav"))[:3]
    from_paths = model.encode_audio(clips)
    waves = [soundfile.read(c, dtype="float32")[0] for c in clips]
    from_arrays = model.encode_audio(waves, sample_rate=16000)
    torch.testing.assert_close(from_arrays, from_paths)
    assert from_paths.shape == (3, 32)

    again = CliRunner().invoke(cli, ["align", "--recipe", str(recipe_file), "--out", str(out), "--no-progress"])
    assert again.exit_code == 2 and "--resume" in again.output


def test_warm_cache_never_runs_the_text_tower_lora_with_checkpointing(tmp_path: Path, monkeypatch) -> None:
    recipe_file = beats_recipe(tmp_path)
    cold = load_recipe(recipe_file, [f"output.dir={tmp_path / 'cold'}", "train.max_steps=1"])
    modbind.align(cold, progress=False)

    from modbind.anchor.anchor import Anchor

    def no_text_tower(*args, **kwargs):
        raise AssertionError("a warm run must not embed captions")

    monkeypatch.setattr(Anchor, "encode_text", no_text_tower)
    warm = load_recipe(recipe_file, [f"output.dir={tmp_path / 'warm'}", "train.finetune=lora",
                                     "plugin.options.gradient_checkpointing=true", "train.max_steps=2"])
    result = modbind.align(warm, progress=False)
    assert result.steps == 2 and np.isfinite(result.history).all()
    start = json.loads((tmp_path / "warm" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["trainable_parameters"] < start["total_parameters"] / 2


@pytest.mark.gpu
def test_align_on_cuda_in_bf16_exports_a_model_that_embeds_on_the_cpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    recipe = load_recipe(beats_recipe(tmp_path), [f"output.dir={tmp_path / 'run'}", "train.precision=bf16"])
    result = modbind.align(recipe, progress=False)
    assert result.steps == 3 and np.isfinite(result.history).all()
    start = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["device"].startswith("cuda") and start["precision"] == "bf16"
    clips = sorted((tmp_path / "audio").glob("*.wav"))[:3]
    embeddings = modbind.load(result.export_dir).encode_audio(clips)
    assert embeddings.shape == (3, 32) and torch.isfinite(embeddings).all()


def test_items_repaired_while_decoding_are_counted_per_epoch(tmp_path: Path) -> None:
    recipe_file = beats_recipe(tmp_path)
    clip = tmp_path / "audio" / "clip0.wav"
    hot, _ = soundfile.read(clip, dtype="float32")
    soundfile.write(clip, hot * 30.0, 16000, subtype="FLOAT")  # float audio peaking far beyond ±1
    holey = hot.copy()
    holey[::2000] = np.nan  # 8 NaN samples of 16000: few enough to be zeroed, not refused
    soundfile.write(tmp_path / "audio" / "clip1.wav", holey, 16000, subtype="FLOAT")
    recipe = load_recipe(recipe_file, [f"output.dir={tmp_path / 'run'}", "train.max_steps=2"])
    result = modbind.align(recipe, progress=False)  # 16 clips, batch 8: one whole epoch
    records = [json.loads(line) for line in (result.out_dir / "metrics.jsonl").read_text().splitlines()]
    [epoch] = [r for r in records if r["event"] == "epoch_end"]
    assert (epoch["seen"], epoch["skipped"], epoch["repaired"]) == (16, 0, 2)
    assert sorted(epoch["repaired_examples"]) == ["clip0: peak_normalised", "clip1: nonfinite_zeroed"]


def test_cpu_threads_are_chosen_from_cores_ranks_and_workers() -> None:
    from modbind.train.threads import choose_threads, share_of_cores

    cpu = torch.device("cpu")
    assert share_of_cores(16, 1, 4) == 12 and share_of_cores(16, 4, 1) == 3
    assert share_of_cores(2, 1, 4) == 1 and share_of_cores(2, 2, 0) == 1  # never below one
    choice = choose_threads(None, device=cpu, workers=2, env={"LOCAL_WORLD_SIZE": "2"}, cores=16)
    assert (choice.threads, choice.source) == (6, "16 cores ÷ 2 rank(s) on this machine − 2 DataLoader worker(s), "
                                                  "at least 1")
    assert choose_threads(None, device=cpu, workers=0, env={"LOCAL_SIZE": "4"}, cores=8).threads == 2  # deepspeed
    assert choose_threads(None, device=cpu, workers=0, env={"OMP_NUM_THREADS": "3"}, cores=8).threads == 3
    assert choose_threads(5, device=cpu, workers=0, env={"OMP_NUM_THREADS": "3"}, cores=8).source == "train.threads"
    assert choose_threads(None, device=torch.device("cuda"), workers=0, env={}, cores=8) is None
    assert choose_threads(2, device=torch.device("cuda"), workers=0, env={}, cores=8).threads == 2


def test_align_logs_its_thread_choice_and_takes_threads_as_an_override(tmp_path: Path, monkeypatch) -> None:
    recipe_file = beats_recipe(tmp_path)  # data.num_workers: 1
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr("modbind.train.threads.usable_cores", lambda: 3)
    chosen = CliRunner().invoke(cli, ["align", "--recipe", str(recipe_file), "--out", str(tmp_path / "auto"),
                                      "--set", "train.max_steps=1", "--no-progress"])
    assert chosen.exit_code == 0, chosen.output
    assert ("CPU threads: 2 per process (3 cores ÷ 1 rank(s) on this machine − 1 DataLoader worker(s)"
            in chosen.output)
    start = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[0])
    assert (start["threads"], start["threads_from"]) == (2, "3 cores ÷ 1 rank(s) on this machine − 1 DataLoader "
                                                            "worker(s), at least 1")
    assert torch.get_num_threads() == 1  # restored for the caller (the one_thread fixture set 1)

    forced = CliRunner().invoke(cli, ["align", "--recipe", str(recipe_file), "--out", str(tmp_path / "forced"),
                                      "--set", "train.max_steps=1", "--threads", "1", "--no-progress"])
    assert forced.exit_code == 0, forced.output
    assert "CPU threads: 1 per process (train.threads" in forced.output
    start = json.loads((tmp_path / "forced" / "metrics.jsonl").read_text().splitlines()[0])
    assert (start["threads"], start["threads_from"]) == (1, "train.threads")
