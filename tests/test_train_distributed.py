"""Two CPU processes (gloo) through `modbind align`: negatives gathered across ranks give the global-batch run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import yaml

from modbind.config import Recipe
from modbind.train.engine import free_port
import modbind
from train_world import build_separating_anchor, captions, imu_recipe, write_audio_world, write_imu_world


def steps(run: Path) -> list[dict]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["event"] == "step"]


def losses(run: Path) -> list[float]:
    return [r["loss"] for r in steps(run)]


def align_on_two_gloo_ranks(recipe_file: Path, cwd: Path) -> None:
    port = str(free_port())
    extensions = cwd / "torch_extensions"  # where a JIT-built DeepSpeed op would go: no build may happen
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": port, "LOCAL_SIZE": "2", "TORCH_EXTENSIONS_DIR": str(extensions)}
    command = [sys.executable, "-m", "modbind.cli.main", "align", "--recipe", str(recipe_file), "--no-progress"]
    ranks = [subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=cwd,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [rank.communicate(timeout=600)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert not extensions.exists() and not any("-laio" in output for output in outputs)


def align_in_one_process(settings: dict, out: Path):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return modbind.align(Recipe.model_validate({**settings, "output": {"dir": str(out)}}), progress=False)
    finally:
        torch.set_num_threads(before)


def test_two_gloo_ranks_train_like_one_process_with_the_global_batch(tmp_path: Path, imu_plugin) -> None:
    texts = captions(32, seed=2)
    anchor = build_separating_anchor(tmp_path / "anchor", texts)
    manifest = write_imu_world(tmp_path / "imu", texts, seed=2)
    settings = imu_recipe(anchor, manifest, tmp_path / "two", max_steps=6, batch_size=8)
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(settings))

    align_on_two_gloo_ranks(recipe_file, tmp_path)
    start = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["micro_batch"] == 4
    assert (tmp_path / "two" / "export" / "card.json").is_file()

    single = align_in_one_process(settings, tmp_path / "one")
    # same items per global batch, gradients averaged over ranks = one process's gradients
    np.testing.assert_allclose(losses(tmp_path / "two"), single.history, rtol=2e-4, atol=1e-5)
    assert single.history[-1] < single.history[0]


def test_world_size_changes_nothing_with_specaugment_and_layerdrop_on(tmp_path: Path) -> None:
    """Tiny BEATs, random crops, SpecAugment and layerdrop 0.5: 1 process and 2 gloo ranks take the same steps.

    Each clip's crop and masks are keyed by its place in the epoch and layerdrop by the step, never by the
    rank; the temperature, which every rank sees whole, gets one gradient, not one per rank.
    """
    texts = captions(16, seed=5)
    anchor = build_separating_anchor(tmp_path / "anchor", texts)
    manifest = write_audio_world(tmp_path / "audio", texts, seconds=1.0)
    settings = {
        "anchor": {"model": f"local-dir:{anchor}", "pretrained": None},
        "plugin": {"name": "audio_beats", "options": {"size": "tiny", "clip_seconds": 0.5, "layerdrop": 0.5,
                                                      "freq_mask": 30, "time_mask": 20}},
        "data": {"train": [{"manifest": str(manifest)}], "num_workers": 0,
                 "caption_cache": str(tmp_path / "caption-cache")},
        "train": {"batch_size": 8, "max_steps": 6, "precision": "fp32", "log_every": 1,
                  "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 1}},
        "output": {"dir": str(tmp_path / "two")},
    }
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(settings))
    align_on_two_gloo_ranks(recipe_file, tmp_path)
    single = align_in_one_process(settings, tmp_path / "one")
    two, one = steps(tmp_path / "two"), steps(tmp_path / "one")
    assert len(one) == len(two) == 6
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=0, atol=1e-6)
    np.testing.assert_allclose([r["logit_scale"] for r in two], [r["logit_scale"] for r in one], rtol=1e-6, atol=0)
    assert one[-1]["logit_scale"] != one[0]["logit_scale"]  # the temperature did train
    assert single.steps == 6
