"""What the three finished audio plugins share: end-to-end alignment and the option contract.

Each plugin trains a few alignment steps, exports and reloads to unit-norm embeddings; each refuses options
built for another plugin.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from modbind.audio.base import AudioEncoderOptions
from modbind.plugins import get_registry

# Tiny architecture of each plugin on 1 s clips, so three steps take seconds on a CPU.
TINY_PLUGINS: dict[str, dict[str, Any]] = {
    "audio_beats": {"size": "tiny", "clip_seconds": 1.0},
    "audio_htsat": {"architecture": "tiny", "clip_seconds": 1.0},
    "audio_mae": {"size": "tiny", "clip_seconds": 1.0},
}


@pytest.mark.slow
@pytest.mark.parametrize("plugin_name", sorted(TINY_PLUGINS))
def test_tiny_align_run_trains_and_exports(tmp_path: Path, plugin_name: str) -> None:
    import train_world

    import modbind
    from modbind.config import Recipe

    texts = train_world.captions(8)
    anchor = train_world.build_separating_anchor(tmp_path / "anchor", texts)
    manifest = train_world.write_audio_world(tmp_path / "audio", texts, seconds=1.0)
    raw = train_world.imu_recipe(anchor, manifest, tmp_path / "run", batch_size=4, max_steps=3)
    raw["plugin"] = {"name": plugin_name, "options": TINY_PLUGINS[plugin_name]}

    result = modbind.align(Recipe.model_validate(raw), progress=False)

    assert result.steps == 3 and all(torch.isfinite(torch.tensor(result.history)))
    embeddings = modbind.load(result.export_dir).encode([tmp_path / "audio" / "clip0.wav"])
    assert embeddings.shape == (1, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(1))


@pytest.mark.parametrize("plugin_name", sorted(TINY_PLUGINS))
def test_options_of_another_plugin_are_refused(plugin_name: str) -> None:
    plugin = get_registry().encoder(plugin_name)
    assert plugin.options(TINY_PLUGINS[plugin_name]).clip_seconds == 1.0
    with pytest.raises(TypeError, match=f"{plugin_name}: expected {plugin.Options.__name__}, got AudioEncoderOptions"):
        plugin.build_encoder(AudioEncoderOptions())
