"""audio_htsat with LAION-CLAP audio towers: LAION-CLAP 1.1.7's own outputs reproduced, fused or not.

The fixture (tests/fixtures/conformance/laion_clap, see its README) holds a tiny fused tower in
LAION-CLAP's checkpoint layout and what LAION-CLAP computes for two short clips with and without fusion.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from modbind.errors import CheckpointError
from modbind_audio_htsat.encoder import HtsatEncoder
from modbind_audio_htsat.plugin import HtsatOptions, HtsatPlugin, repeat_to_fill

pytestmark = pytest.mark.usefixtures("one_thread")

FIXTURE = Path(__file__).parent / "fixtures" / "conformance" / "laion_clap"
CLIPS = ("tones_4s", "chirp_2p5s")  # the rows of the stored embeddings
# Measured and explained in the fixture README (about 4x margin): LAION-CLAP's Slaney front-end is a float32
# DFT convolution, ours a float32 FFT, so cells far below the clip's peak differ more than the loud ones
# (within 60 dB of the peak: 3.8e-5 dB; everywhere: 2.6e-2 dB). Its HTK front-end uses torch.stft like ours.
SLANEY_LOUD_DB, SLANEY_ALL_DB, HTK_DB = 2e-4, 5e-2, 2e-4
EMBEDDING_ATOL = 1e-5  # measured 2.1e-6 (non-fused) and 4.8e-7 (fused), entries up to 3.8


@pytest.fixture(scope="module")
def plugin() -> HtsatPlugin:
    return HtsatPlugin()


@pytest.fixture(scope="module")
def peer() -> dict[str, torch.Tensor]:
    return load_file(str(FIXTURE / "tiny_clap_htsat_io.safetensors"))


@pytest.fixture(scope="module")
def fused_path() -> Path:
    return FIXTURE / "tiny_clap_htsat_fused.pt"


@pytest.fixture(scope="module")
def unfused_path(fused_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The non-fused tower: the fused file without its fusion branch (the generator built them so)."""
    fusion = json.loads((FIXTURE / "tiny_clap_htsat_io.json").read_text())["fusion_keys"]
    checkpoint = torch.load(fused_path, map_location="cpu", weights_only=True)
    state = checkpoint["state_dict"]
    for key in fusion:
        del state[f"module.audio_branch.{key}"]
    path = tmp_path_factory.mktemp("clap") / "tiny_clap_htsat_unfused.pt"
    torch.save(checkpoint, path)
    return path


def clips(peer: dict[str, torch.Tensor]) -> list[np.ndarray]:
    return [(peer[f"{name}.pcm16"].float() / 32767).numpy() for name in CLIPS]


def embed(plugin: HtsatPlugin, options: HtsatOptions, encoder: HtsatEncoder, waves: list[np.ndarray]):
    items = [plugin.preprocess(wave, options, train=False) for wave in waves]
    features = plugin.featurize({key: torch.stack([item[key] for item in items]) for key in items[0]}, options)
    with torch.no_grad():
        return encoder(features), features


def assert_same_embedding(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    torch.testing.assert_close(ours, theirs, atol=EMBEDDING_ATOL, rtol=0)
    assert F.cosine_similarity(ours, theirs).min() > 1 - 1e-6


def test_laion_clap_rate_makes_repeatpad_the_default(plugin) -> None:
    assert plugin.options({"sample_rate": 48000}).short_clips == "repeatpad"
    assert plugin.options({}).short_clips == "stretch"  # official HTS-AT (32 kHz)
    assert plugin.options({"sample_rate": 48000, "short_clips": "stretch"}).short_clips == "stretch"
    fused = plugin.options({"sample_rate": 48000, "mel_scale": "htk"})
    assert fused.mel_scale == "htk"
    assert plugin.options(fused.model_dump(mode="json")) == fused  # what an export's card rebuilds


def test_repeatpad_repeats_whole_copies_then_pads_with_zeros(plugin) -> None:
    """LAION-CLAP: n = target // len copies of the clip, then zeros up to the target."""
    clip = np.array([0.1, -0.2, 0.3], dtype=np.float32)
    assert repeat_to_fill(clip, 10).tolist() == pytest.approx([0.1, -0.2, 0.3] * 3)
    assert repeat_to_fill(clip, 3) is clip
    options = plugin.options({"sample_rate": 48000, "clip_seconds": 0.03})  # 1440 samples
    wave = np.sin(np.arange(1000, dtype=np.float32))
    item = plugin.preprocess(wave, options, train=False)
    assert torch.equal(item["waveform"][:1000], torch.from_numpy(wave))
    assert torch.equal(item["waveform"][1000:], torch.zeros(440))  # 1440 // 1000 = 1 copy: the rest is zeros
    longer = plugin.preprocess(np.tile(wave, 3)[:2900], plugin.options({"sample_rate": 48000, "clip_seconds": 0.06}),
                               train=False)  # 2880 samples: 0 copies to add, cut like every other policy
    assert not longer["padding_mask"].any()
    tiled = plugin.preprocess(wave[:700], options, train=False)
    assert torch.equal(tiled["waveform"][:1400], torch.from_numpy(np.tile(wave[:700], 2)))
    assert tiled["padding_mask"].tolist() == [False] * 1400 + [True] * 40


def test_non_fused_tower_reproduces_laion_clap_on_short_clips(plugin, peer, unfused_path) -> None:
    options = plugin.options({"checkpoint": str(unfused_path), "sample_rate": 48000})
    encoder = plugin.build_encoder(options).eval()
    assert encoder.load_report.tower == "non-fused LAION-CLAP" and not encoder.load_report.fusion

    output, features = embed(plugin, options, encoder, clips(peer))

    logmel, theirs = features["features"][0], peer["unfused.logmel_tones_4s"]
    loud = theirs > theirs.max() - 60
    assert (logmel - theirs).abs()[loud].max() < SLANEY_LOUD_DB
    assert (logmel - theirs).abs().max() < SLANEY_ALL_DB
    # 4 s repeated twice is 8 s: the last 2 s (200 frames) are padding, fed to the model as LAION-CLAP does;
    # 2.5 s repeated 4 times fills the 10 s exactly.
    assert features["padding_mask"].sum(dim=1).tolist() == [200, 0]
    assert_same_embedding(output.pooled, peer["unfused.embedding"])
    assert output.token_padding_mask is not None and not output.token_padding_mask[:, 0].any()
    for policy in ("stretch", "pad"):  # other inputs than LAION-CLAP's, not float rounding
        other = plugin.options({"checkpoint": str(unfused_path), "sample_rate": 48000, "short_clips": policy})
        encoder.short_clips = policy
        pooled = embed(plugin, other, encoder, clips(peer))[0].pooled
        assert (pooled - peer["unfused.embedding"]).abs().max() > 100 * EMBEDDING_ATOL


def test_fused_tower_takes_the_htk_front_end_and_reproduces_laion_clap(plugin, peer, fused_path) -> None:
    options = plugin.options({"checkpoint": str(fused_path), "sample_rate": 48000, "mel_scale": "htk"})
    encoder = plugin.build_encoder(options).eval()
    report = encoder.load_report
    fusion = json.loads((FIXTURE / "tiny_clap_htsat_io.json").read_text())["fusion_keys"]
    assert report.tower == "fused LAION-CLAP" and sorted(report.fusion) == sorted(fusion)
    assert set(fusion) <= set(report.ignored)

    output, features = embed(plugin, options, encoder, clips(peer))

    torch.testing.assert_close(features["features"][0], peer["fused.logmel_tones_4s"], atol=HTK_DB, rtol=0)
    assert_same_embedding(output.pooled, peer["fused.embedding"])
    # The non-fused (Slaney) front-end on the same tower is far off: what loading used to do silently.
    slaney = plugin.options({"sample_rate": 48000})
    wrong = embed(plugin, slaney, encoder, clips(peer))[0].pooled
    assert (wrong - peer["fused.embedding"]).abs().max() > 100 * EMBEDDING_ATOL


def test_front_end_that_contradicts_the_tower_is_refused(plugin, fused_path, unfused_path) -> None:
    with pytest.raises(CheckpointError, match=r"tiny_clap_htsat_fused\.pt holds a fused LAION-CLAP audio tower.*"
                                              r"HTK.*set plugin\.options\.mel_scale: htk \(it is slaney\)"):
        plugin.build_encoder(plugin.options({"checkpoint": str(fused_path), "sample_rate": 48000}))
    with pytest.raises(CheckpointError, match=r"non-fused LAION-CLAP.*mel_scale: slaney \(it is htk\)"):
        plugin.build_encoder(plugin.options({"checkpoint": str(unfused_path), "sample_rate": 48000,
                                             "mel_scale": "htk"}))
    with pytest.raises(CheckpointError, match=r"melW.*sample_rate: 48000"):  # its melW is the 48 kHz one
        plugin.build_encoder(plugin.options({"checkpoint": str(unfused_path), "mel_scale": "slaney"}))


def test_transformers_format_towers_need_their_rate_and_front_end(plugin, tmp_path: Path) -> None:
    """A ClapAudioModel state dict has no melW: 48 kHz is required, and fusion keys require the HTK mel."""
    from transformers import ClapAudioModel

    from modbind_audio_htsat.architecture import PRESETS

    config = PRESETS["tiny"].to_clap_config()
    config.enable_fusion = True
    path = tmp_path / "clap_audio_fused.safetensors"
    save_file({k: v.contiguous() for k, v in ClapAudioModel(config).state_dict().items()}, str(path))
    with pytest.raises(CheckpointError, match=r"fused LAION-CLAP audio tower, trained on 48000 Hz.*"
                                              r"set plugin\.options\.sample_rate: 48000 \(it is 32000\)"):
        plugin.build_encoder(plugin.options({"checkpoint": str(path), "mel_scale": "htk"}))
    with pytest.raises(CheckpointError, match="mel_scale: htk"):
        plugin.build_encoder(plugin.options({"checkpoint": str(path), "sample_rate": 48000}))
    loaded = plugin.build_encoder(plugin.options({"checkpoint": str(path), "sample_rate": 48000, "mel_scale": "htk"}))
    assert loaded.load_report.layout == "transformers" and loaded.load_report.fusion
    assert any("mel_conv2d" in key for key in loaded.load_report.fusion)
