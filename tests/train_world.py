"""Tiny worlds for the trainer tests: a tiny anchor whose text tower separates captions, and IMU/audio items.

Shared by tests/test_train_*.py and tests/test_export.py (imported as a plain module from tests/).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

WORDS = ("dog cat bird cow rain wind bell drum horn car train boat siren piano guitar water fire clock door "
         "glass engine child crowd sheep frog").split()


def captions(count: int, seed: int = 0) -> list[str]:
    """``count`` distinct three-word captions (duplicates would be false negatives in InfoNCE)."""
    rng = random.Random(seed)
    seen: dict[str, None] = {}
    while len(seen) < count:
        seen.setdefault(" ".join(rng.sample(WORDS, 3)), None)
    return list(seen)


def build_separating_anchor(folder: Path, texts: list[str]) -> Path:
    """A tiny open_clip anchor whose random text tower gives well-spread caption embeddings.

    A freshly initialised tower maps every sentence to nearly the same vector (cosine ≈ 0.97); scaling
    its word embeddings lets token identity dominate (mean cosine ≈ 0.5), like a trained anchor.
    """
    from safetensors.torch import load_file, save_file

    from modbind.anchor import build_tiny_openclip

    path = build_tiny_openclip(folder, texts, embed_dim=32, text_layers=1, vision_layers=1)
    weights_file = path / "open_clip_model.safetensors"
    weights = load_file(str(weights_file))
    for name in weights:
        if name.endswith("word_embeddings.weight"):
            weights[name] = weights[name] * 30.0
    save_file(weights, str(weights_file))
    return path


def write_imu_world(folder: Path, texts: list[str], *, seed: int = 0, length: int = 40) -> Path:
    """One 6-channel series per caption: an item-specific offset per channel plus a little noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i, text in enumerate(texts):
        series = rng.standard_normal((6, 1)) + 0.1 * rng.standard_normal((6, length))
        np.save(folder / f"imu{i}.npy", series.astype(np.float32))
        lines.append({"id": f"imu{i}", "path": f"imu{i}.npy", "captions": {"en": [text]}})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def write_audio_world(folder: Path, texts: list[str], *, seed: int = 0, seconds: float = 1.0,
                      sample_rate: int = 16000) -> Path:
    """One short tone mixture per caption as 16-bit WAV (a distinct pitch pair each)."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    lines = []
    for i, text in enumerate(texts):
        f1, f2 = rng.uniform(200, 3000, size=2)
        wave = 0.4 * np.sin(2 * np.pi * f1 * t) + 0.2 * np.sin(2 * np.pi * f2 * t) + 0.01 * rng.standard_normal(t.size)
        soundfile.write(folder / f"clip{i}.wav", wave.astype(np.float32), sample_rate, subtype="PCM_16")
        lines.append({"id": f"clip{i}", "path": f"clip{i}.wav", "captions": {"en": [text]}})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def write_depth_world(folder: Path, texts: list[str], *, seed: int = 0, size: int = 24) -> Path:
    """One depth map per caption as a 16-bit PNG in millimetres: a tilted plane at its own distance and slope."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    lines = []
    for i, text in enumerate(texts):
        near, slope_x, slope_y = rng.uniform(0.5, 4.0), rng.uniform(-1, 1), rng.uniform(-1, 1)
        metres = near + slope_x * cols + slope_y * rows + 0.01 * rng.standard_normal((size, size))
        Image.fromarray(np.round(np.clip(metres, 0.1, 8.0) * 1000).astype(np.uint16)).save(folder / f"depth{i}.png")
        lines.append({"id": f"depth{i}", "path": f"depth{i}.png", "captions": {"en": [text]}})
    manifest = folder / "train.jsonl"
    manifest.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return manifest


def imu_recipe(anchor: Path, manifest: Path, out: Path, **train: Any) -> dict[str, Any]:
    """A recipe dict for a fast CPU run of the IMU plugin (override ``train`` keys as needed)."""
    settings: dict[str, Any] = {
        "batch_size": 16, "max_steps": 20, "precision": "fp32", "log_every": 1, "checkpoint_every": 1000,
        "optimizer": {"lr": 3e-3, "min_lr": 3e-4, "warmup_steps": 5},
    }
    for key, value in train.items():
        if isinstance(value, dict) and isinstance(settings.get(key), dict):
            settings[key] = {**settings[key], **value}
        else:
            settings[key] = value
    return {
        "anchor": {"model": f"local-dir:{anchor}", "pretrained": None},
        "plugin": {"name": "imu_conv", "options": {"window": 32, "width": 32}},
        "data": {"train": [{"manifest": str(manifest)}], "num_workers": 0,
                 "caption_cache": str(out.parent / "caption-cache")},
        "train": settings,
        "output": {"dir": str(out)},
    }


def imu_world(root: Path, count: int) -> dict[str, Path]:
    """A separating anchor and an IMU manifest of ``count`` captioned items under ``root``."""
    texts = captions(count)
    return {"root": root, "anchor": build_separating_anchor(root / "anchor", texts),
            "manifest": write_imu_world(root / "imu", texts)}


def imu_run(world: dict[str, Path], name: str, **train: Any) -> Any:
    """The validated recipe of a fast IMU run named ``name`` in ``world`` (see :func:`imu_recipe`)."""
    from modbind.config import Recipe

    return Recipe.model_validate(imu_recipe(world["anchor"], world["manifest"], world["root"] / name, **train))
