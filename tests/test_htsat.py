"""audio_htsat: official HTS-AT outputs reproduced from the conformance fixture, checkpoint layouts, contract."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from modbind.errors import CheckpointError, ConfigError
from modbind.plugins import get_registry
from modbind_audio_htsat.architecture import PRESETS, infer_architecture
from modbind_audio_htsat.convert import clap_to_official, official_to_clap
from modbind_audio_htsat.encoder import HtsatEncoder
from modbind_audio_htsat.frontend import FrontEndParams, log_mel, slaney_mel_filterbank
from modbind_audio_htsat.plugin import HtsatPlugin

pytestmark = pytest.mark.usefixtures("one_thread")

# Suggested tolerances of conformance/htsat/README.md ("Observed tolerance").
LOGMEL_ATOL = 1e-3
SPEC_IMAGE_ATOL = 1e-4
OUTPUT_ATOL = 1e-5




@pytest.fixture(scope="module")
def htsat_dir(conformance_dir: Path) -> Path:
    return conformance_dir / "htsat"


@pytest.fixture(scope="module")
def io(htsat_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(htsat_dir / "tiny_htsat_io.safetensors"))


@pytest.fixture(scope="module")
def waveforms(io) -> torch.Tensor:
    return io["waveform_pcm16"].float() / 32767  # the official int16_to_float32


@pytest.fixture(scope="module")
def plugin() -> HtsatPlugin:
    return HtsatPlugin()


@pytest.fixture(scope="module")
def options(plugin, htsat_dir: Path):
    return plugin.options({"checkpoint": str(htsat_dir / "tiny_htsat.ckpt")})


@pytest.fixture(scope="module")
def encoder(plugin, options) -> HtsatEncoder:
    return plugin.build_encoder(options).eval()


def _eval_batch(plugin, options, clips: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    items = [plugin.preprocess(clip.numpy(), options, train=False) for clip in clips]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    return plugin.featurize(batch, options)


def test_registered_with_paper_defaults(plugin, fresh_registry) -> None:
    assert isinstance(get_registry().encoder("audio_htsat"), HtsatPlugin)
    opts = plugin.options({})
    assert plugin.name == "audio_htsat" and plugin.modality == "audio"
    assert opts.sample_rate == 32000 and opts.clip_seconds == 10.0 and opts.clip_samples == 320000
    assert opts.architecture == "audioset" and opts.short_clips == "stretch"


def test_options_reject_clips_longer_than_the_model_takes(plugin) -> None:
    with pytest.raises(ConfigError, match="clip_seconds"):
        plugin.options({"clip_seconds": 11})
    with pytest.raises(ConfigError, match="short_clip"):
        plugin.options({"short_clip": "pad"})
    with pytest.raises(ConfigError, match="sample_rate"):
        plugin.options({"sample_rate": 16000})


def test_mel_matrix_is_the_official_melw_bit_for_bit(htsat_dir: Path) -> None:
    ckpt = torch.load(htsat_dir / "tiny_htsat.ckpt", map_location="cpu", weights_only=True)
    assert torch.equal(slaney_mel_filterbank(FrontEndParams()), ckpt["state_dict"]["sed_model.logmel_extractor.melW"])


def test_featurize_reproduces_official_logmel(plugin, options, waveforms, io) -> None:
    features = _eval_batch(plugin, options, list(waveforms))
    assert features["features"].shape == (2, 1001, 64)
    assert not features["padding_mask"].any()
    torch.testing.assert_close(features["features"], io["logmel"][:, 0], atol=LOGMEL_ATOL, rtol=0)


def test_tiny_checkpoint_reproduces_official_outputs(plugin, options, encoder, waveforms, io) -> None:
    captured: dict[str, torch.Tensor] = {}
    hooks = [
        encoder.body.patch_embed.register_forward_hook(lambda m, args, out: captured.update(spec_image=args[0])),
        encoder.model.register_forward_hook(lambda m, args, out: captured.update(feature_map=out.last_hidden_state)),
    ]
    try:
        with torch.no_grad():
            from_logmel = encoder({"features": io["logmel"][:, 0]})
            assert torch.allclose(captured["spec_image"], io["spec_image"], atol=SPEC_IMAGE_ATOL, rtol=0)
            assert torch.allclose(captured["feature_map"], io["feature_map"], atol=OUTPUT_ATOL, rtol=0)
            from_audio = encoder(_eval_batch(plugin, options, list(waveforms)))
            assert torch.allclose(captured["spec_image"], io["spec_image"], atol=SPEC_IMAGE_ATOL, rtol=0)
    finally:
        for hook in hooks:
            hook.remove()
    torch.testing.assert_close(from_logmel.pooled, io["latent_output"], atol=OUTPUT_ATOL, rtol=0)
    torch.testing.assert_close(from_audio.pooled, io["latent_output"], atol=OUTPUT_ATOL, rtol=0)
    assert from_audio.tokens.shape == (2, 32, 96) and encoder.width == 96
    report = encoder.load_report
    assert sorted(report.ignored) == ["head.bias", "head.weight", "tscam_conv.bias", "tscam_conv.weight"]
    assert "logmel_extractor.melW" in report.checked
    assert any("optimizer_states" in entry for entry in report.skipped)


def _assert_same_weights(loaded: HtsatEncoder, reference: HtsatEncoder) -> None:
    expected = reference.state_dict()
    actual = loaded.state_dict()
    assert actual.keys() == expected.keys()
    for key, tensor in expected.items():
        assert actual[key].dtype == tensor.dtype and torch.equal(actual[key], tensor), key


def test_weight_averaged_float32_checkpoint_loads(plugin, encoder, htsat_dir: Path, tmp_path: Path) -> None:
    """main.py weight_average(): {"state_dict": ...} only, every tensor float32 (index buffers too)."""
    ckpt = torch.load(htsat_dir / "tiny_htsat.ckpt", map_location="cpu", weights_only=True)
    averaged = {key: value.float() for key, value in ckpt["state_dict"].items()}
    assert averaged["sed_model.layers.0.blocks.0.attn.relative_position_index"].dtype == torch.float32
    path = tmp_path / "HTSAT_AudioSet_Saved_1.ckpt"
    torch.save({"state_dict": averaged}, path)
    loaded = plugin.build_encoder(plugin.options({"checkpoint": str(path)}))
    _assert_same_weights(loaded, encoder)  # the encoder that reproduces the official outputs
    assert loaded.body.batch_norm.num_batches_tracked.item() == 123456
    assert any(key.endswith("relative_position_index") for key in loaded.load_report.checked)


def test_learned_only_safetensors_without_prefix_loads(plugin, encoder, htsat_dir: Path) -> None:
    loaded = plugin.build_encoder(plugin.options({"checkpoint": str(htsat_dir / "tiny_htsat.safetensors")}))
    _assert_same_weights(loaded, encoder)


def test_laion_clap_own_checkpoint_layout_loads(plugin, encoder, htsat_dir: Path, tmp_path: Path) -> None:
    """LAION-CLAP's training checkpoints: the official keys under module.audio_branch., beside other towers."""
    ckpt = torch.load(htsat_dir / "tiny_htsat.ckpt", map_location="cpu", weights_only=True)
    state = {"module.audio_branch." + key.removeprefix("sed_model."): value
             for key, value in ckpt["state_dict"].items()}
    state["module.text_branch.embeddings.word_embeddings.weight"] = torch.zeros(4, 2)
    state["module.audio_projection.0.weight"] = torch.zeros(2, 96)
    path = tmp_path / "epoch_top_0.pt"
    torch.save({"epoch": 3, "state_dict": state}, path)
    loaded = plugin.build_encoder(plugin.options({"checkpoint": str(path)}))
    _assert_same_weights(loaded, encoder)
    assert {"module.text_branch.embeddings.word_embeddings.weight",
            "module.audio_projection.0.weight"} <= set(loaded.load_report.ignored)


def test_mel_front_end_of_another_rate_is_refused(plugin, htsat_dir: Path) -> None:
    opts = plugin.options({"checkpoint": str(htsat_dir / "tiny_htsat.ckpt"), "sample_rate": 48000})
    with pytest.raises(CheckpointError, match=r"tiny_htsat\.ckpt.*melW.*sample_rate"):
        plugin.build_encoder(opts)


def test_laion_clap_tower_in_transformers_format_loads(plugin, tmp_path: Path) -> None:
    """The audio tower of a ClapModel state dict (laion/clap-htsat-unfused layout) initialises the encoder."""
    from transformers import ClapConfig, ClapModel

    torch.manual_seed(0)
    arch = PRESETS["tiny"]
    text = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=24)
    clap = ClapModel(ClapConfig(audio_config=arch.to_clap_config().to_dict(), text_config=text, projection_dim=8)).eval()
    with torch.no_grad():  # non-trivial bn0 statistics and biases, so a dropped tensor would show
        for name, tensor in clap.audio_model.state_dict().items():
            if tensor.is_floating_point() and "batch_norm.running_var" not in name:
                tensor.add_(0.1 * torch.randn_like(tensor))
    path = tmp_path / "clap_htsat.safetensors"
    save_file({k: v.contiguous() for k, v in clap.state_dict().items()}, str(path))
    loaded = plugin.build_encoder(plugin.options({"checkpoint": str(path), "sample_rate": 48000}))
    expected = clap.audio_model.state_dict()
    assert loaded.model.state_dict().keys() == expected.keys()
    for key, tensor in expected.items():  # same class and same tensors: the same function
        assert torch.equal(loaded.model.state_dict()[key], tensor), key
    report = loaded.load_report
    assert report.layout == "transformers"
    assert any(key.startswith("text_model.") for key in report.ignored)
    assert "audio_projection.linear1.weight" in report.ignored and "logit_scale_a" in report.ignored


def test_unknown_tensors_are_refused_with_the_file_named(plugin, htsat_dir: Path, tmp_path: Path) -> None:
    state = load_file(str(htsat_dir / "tiny_htsat.safetensors"))
    state["decoder.blocks.0.weight"] = torch.zeros(3)
    path = tmp_path / "foreign.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"foreign\.safetensors.*decoder\.blocks\.0\.weight"):
        plugin.build_encoder(plugin.options({"checkpoint": str(path)}))
    del state["decoder.blocks.0.weight"], state["norm.weight"]
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"missing 1 tensors \(audio_encoder\.norm\.weight\)"):
        plugin.build_encoder(plugin.options({"checkpoint": str(path)}))


def test_full_size_model_has_exactly_the_official_keys(htsat_dir: Path) -> None:
    manifest = json.loads((htsat_dir / "htsat_audioset_full_manifest.json").read_text())
    official = {entry["key"]: torch.empty(entry["shape"], device="meta") for entry in manifest["keys"]}
    learned = {entry["key"] for entry in manifest["keys"] if entry["learned"]}
    with torch.device("meta"):
        model_state = HtsatEncoder(PRESETS["audioset"]).model.state_dict()

    converted = official_to_clap(official)
    assert not converted.unknown
    assert set(converted.tagging) == {"tscam_conv.weight", "tscam_conv.bias", "head.weight", "head.bias"}
    assert set(converted.derived) == set(official) - learned
    model_learned = {k: tuple(v.shape) for k, v in model_state.items() if not k.endswith("relative_position_index")}
    assert {k: tuple(v.shape) for k, v in converted.state.items()} == model_learned

    back = {k: tuple(v.shape) for k, v in clap_to_official(model_state).items()}
    expected = {e["key"]: tuple(e["shape"]) for e in manifest["keys"]
                if e["learned"] or e["key"].endswith("relative_position_index")}
    assert back == {k: v for k, v in expected.items() if k not in converted.tagging}
    assert PRESETS["audioset"].width == 768


@pytest.mark.parametrize("name, width", [("audioset", 768), ("base", 1024), ("tiny", 96)])
def test_every_preset_is_what_its_weights_describe(name: str, width: int) -> None:
    """An exported model of a named LAION-CLAP HTSAT-base tower rebuilds from ``architecture: base`` alone."""
    with torch.device("meta"):
        encoder = HtsatEncoder(PRESETS[name])
    assert infer_architecture(encoder.model.state_dict(), name) == PRESETS[name]
    assert encoder.width == width


def test_short_clips_are_stretched_like_the_official_forward(plugin, options, encoder, waveforms, io) -> None:
    four_seconds = waveforms[0, :128000]
    features = _eval_batch(plugin, options, [four_seconds, waveforms[1]])
    assert features["padding_mask"].sum(dim=1).tolist() == [1001 - 401, 0]
    with torch.no_grad():
        pooled = encoder(features).pooled
        # official order: the 401-frame log-mel of the short clip alone, bn0, then the stretch inside the model
        official = encoder.model(input_features=log_mel(four_seconds[None], FrontEndParams()).unsqueeze(1))
    torch.testing.assert_close(pooled[0], official.pooler_output[0], atol=OUTPUT_ATOL, rtol=0)
    # the full clip next to it is stretched before bn0 here, yet still gives the official embedding
    torch.testing.assert_close(pooled[1], io["latent_output"][1], atol=OUTPUT_ATOL, rtol=0)

    encoder.short_clips = "pad"  # the official AudioSet training data: zero-padded 10 s clips
    try:
        with torch.no_grad():
            as_padded = encoder({key: value[:1] for key, value in features.items()})
    finally:
        encoder.short_clips = "stretch"
    assert (as_padded.pooled[0] - official.pooler_output[0]).abs().max() > 1e-2
    # 401 of 1001 frames are real: feature-map steps from 401/1000 of the way on cover only padding
    assert as_padded.token_padding_mask[0].tolist() == [step >= 13 for step in range(32)]


def test_spec_augment_fills_with_the_mean_level(plugin, options) -> None:
    features = torch.randn(2, 1001, 64) * 5 - 50
    padding = torch.zeros(2, 1001, dtype=torch.bool)
    padding[1, 500:] = True
    opts = plugin.options({"freq_mask": 64, "time_mask": 0})
    generator = torch.Generator().manual_seed(0)
    out = plugin.augment({"features": features, "padding_mask": padding}, opts, generator)["features"]
    changed = (out - features).abs() > 1e-3
    assert changed.any(), "SpecAugment changed nothing"
    mean_level = features[1, :500].mean(dim=0)
    columns = changed[1].any(dim=0)
    torch.testing.assert_close(out[1, 0, columns], mean_level[columns], atol=1e-4, rtol=0)
    assert torch.equal(plugin.augment({"features": features}, plugin.options({"spec_augment": False}))["features"],
                       features)


def test_layers_cover_every_parameter_once_and_lora_targets_exist(plugin) -> None:
    encoder = plugin.build_encoder(plugin.options({"architecture": "tiny"}))
    layers = encoder.layers()
    assert len(layers) == 1 + sum(PRESETS["tiny"].depths)
    seen = [id(p) for layer in layers for p in layer.parameters()]
    assert len(seen) == len(set(seen)) and set(seen) == {id(p) for p in encoder.parameters()}
    names = [name for name, _ in encoder.named_modules()]
    for target in plugin.lora_targets(plugin.options({})):
        assert sum(name.endswith("." + target) for name in names) >= 8


def test_gradient_checkpointing_recomputes_with_identical_gradients(plugin) -> None:
    torch.manual_seed(0)
    encoder = plugin.build_encoder(plugin.options({"architecture": "tiny", "drop_path_rate": 0.0})).train()
    mel = torch.randn(1, 1001, 64) * 10 - 40
    calls = []
    encoder.body.layers[0].blocks[0].register_forward_hook(lambda *args: calls.append(1))

    def gradients() -> torch.Tensor:
        encoder.zero_grad()
        encoder({"features": mel}).pooled.square().sum().backward()
        return torch.cat([p.grad.flatten() for p in encoder.parameters()])

    plain = gradients()
    assert len(calls) == 1
    encoder.set_gradient_checkpointing(True)
    checkpointed = gradients()
    assert len(calls) == 3, "the stage was not recomputed in backward"
    torch.testing.assert_close(checkpointed, plain, atol=1e-6, rtol=1e-5)


@pytest.mark.gpu
def test_runs_on_cuda(plugin, options, encoder, waveforms, io) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    padding_mask = torch.zeros(2, waveforms.shape[1], dtype=torch.bool)
    padding_mask[0, 128000:] = True
    batch = {"waveform": waveforms, "padding_mask": padding_mask}
    on_cpu = plugin.featurize(batch, options)
    on_gpu = plugin.featurize({k: v.cuda() for k, v in batch.items()}, options)
    torch.testing.assert_close(on_gpu["features"].cpu(), on_cpu["features"], atol=LOGMEL_ATOL, rtol=0)
    assert torch.equal(on_gpu["padding_mask"].cpu(), on_cpu["padding_mask"])
    gpu_encoder = plugin.build_encoder(options).cuda().eval()
    with torch.no_grad():
        pooled = gpu_encoder({"features": io["logmel"][:, 0].cuda()}).pooled
    # cuDNN may run the patch-embedding convolution in TF32, hence a looser bound than on the CPU
    torch.testing.assert_close(pooled.cpu(), io["latent_output"], atol=2e-3, rtol=0)
