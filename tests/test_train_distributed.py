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
from train_world import build_separating_anchor, captions, imu_recipe, write_imu_world


def losses(run: Path) -> list[float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in records if "loss" in r]


def test_two_gloo_ranks_train_like_one_process_with_the_global_batch(tmp_path: Path, imu_plugin) -> None:
    texts = captions(32, seed=2)
    anchor = build_separating_anchor(tmp_path / "anchor", texts)
    manifest = write_imu_world(tmp_path / "imu", texts, seed=2)
    settings = imu_recipe(anchor, manifest, tmp_path / "two", max_steps=6, batch_size=8)
    recipe_file = tmp_path / "two.yaml"
    recipe_file.write_text(yaml.safe_dump(settings))

    port = str(free_port())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": port, "LOCAL_SIZE": "2"}
    command = [sys.executable, "-m", "modbind.cli.main", "align", "--recipe", str(recipe_file), "--no-progress"]
    ranks = [subprocess.Popen(command, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, cwd=tmp_path,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
    outputs = [rank.communicate(timeout=600)[0] for rank in ranks]
    assert [rank.returncode for rank in ranks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    start = json.loads((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()[0])
    assert start["world_size"] == 2 and start["micro_batch"] == 4
    assert (tmp_path / "two" / "export" / "card.json").is_file()

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = modbind.align(Recipe.model_validate({**settings, "output": {"dir": str(tmp_path / "one")}}),
                               progress=False)
    finally:
        torch.set_num_threads(before)
    # same items per global batch, gradients averaged over ranks = one process's gradients
    np.testing.assert_allclose(losses(tmp_path / "two"), single.history, rtol=2e-4, atol=1e-5)
    assert single.history[-1] < single.history[0]
