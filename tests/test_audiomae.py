"""audio_mae plugin: official outputs reproduced, official checkpoint layouts accepted, training hooks work."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modbind.errors import CheckpointError, ConfigError
from modbind.plugins import get_registry
from modbind_audio_mae.checkpoint import load_official_weights
from modbind_audio_mae.config import BASE
from modbind_audio_mae.model import AudioMAEEncoder
from modbind_audio_mae.plugin import AudioMAEPlugin, max_clip_seconds

ATOL = 1e-5  # README: suggested tolerance for a faithful float32 re-implementation
FBANK_ATOL = 5e-4  # kaldi_fbank README: independent re-implementation, after normalisation


@pytest.fixture(scope="module")
def fixture_dir(conformance_dir: Path) -> Path:
    return conformance_dir / "audiomae"


@pytest.fixture(scope="module")
def expected(fixture_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(fixture_dir / "tiny_audiomae_io.safetensors")


@pytest.fixture(scope="module")
def plugin() -> AudioMAEPlugin:
    found = get_registry().encoder("audio_mae")
    assert isinstance(found, AudioMAEPlugin) and found.modality == "audio"
    return found


def build(plugin: AudioMAEPlugin, **options) -> AudioMAEEncoder:
    return plugin.build_encoder(plugin.options({"size": "tiny", **options})).eval()


@pytest.mark.parametrize("name, heads", [
    ("tiny_audiomae.pth", {"num_heads": 4}),  # a bare {"model": ...}: the head count must be given
    ("tiny_audiomae.safetensors", {}),  # its metadata stores the cfg, num_heads 4 included
])
def test_tiny_fixture_reproduces_official_outputs(plugin, fixture_dir, expected, name: str, heads: dict) -> None:
    encoder = build(plugin, checkpoint=str(fixture_dir / name), config={"num_classes": 527}, **heads)
    assert encoder.config.num_heads == 4
    fbank = expected["input.fbank"][:, 0]
    with torch.no_grad():
        output = encoder({"features": fbank})
        torch.testing.assert_close(output.pooled, expected["pooled"], atol=ATOL, rtol=0)
        torch.testing.assert_close(encoder.classify({"features": fbank}), expected["logits"], atol=ATOL, rtol=0)
        torch.testing.assert_close(encoder.hidden_states(fbank), expected["last_hidden_state"], atol=ATOL, rtol=0)
        torch.testing.assert_close(encoder.backbone.patch_embed(fbank[:, None]), expected["patch_embed_out"],
                                   atol=ATOL, rtol=0)
    torch.testing.assert_close(output.tokens, expected["last_hidden_state"][:, 1:], atol=ATOL, rtol=0)
    assert encoder.load_report.form == "fine-tuned" and encoder.load_report.ignored == []


def test_alignment_encoder_drops_the_classifier(plugin, fixture_dir, expected) -> None:
    encoder = build(plugin, checkpoint=str(fixture_dir / "tiny_audiomae.pth"), num_heads=4)
    assert not any(key.startswith("head.") for key in encoder.state_dict())
    assert encoder.load_report.ignored == ["head.weight", "head.bias"]
    with torch.no_grad():
        pooled = encoder({"features": expected["input.fbank"][:, 0]}).pooled
    torch.testing.assert_close(pooled, expected["pooled"], atol=ATOL, rtol=0)


def test_featurize_matches_official_fbank(plugin, conformance_dir: Path) -> None:
    reference = load_file(conformance_dir / "kaldi_fbank" / "audiomae_fbank.safetensors")
    cases = sorted({key.split(".")[0] for key in reference})
    # The longest clip whose frames all fit the 1024-frame input, so the 10.4 s case is cut like the official.
    options = plugin.options({"size": "tiny", "clip_seconds": max_clip_seconds()})
    items = [plugin.preprocess(reference[f"{case}.waveform"][0].numpy(), options, train=False) for case in cases]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}

    features = plugin.featurize(batch, options)

    assert features["features"].shape == (len(cases), 1024, 128)
    for row, case in enumerate(cases):
        torch.testing.assert_close(features["features"][row], reference[f"{case}.fbank"][0], atol=FBANK_ATOL, rtol=0)
        num_samples = reference[f"{case}.waveform"].shape[1]
        real_frames = min(1024, 1 + (num_samples - 400) // 160)
        assert int((~features["padding_mask"][row]).sum()) == real_frames


def manifest(fixture_dir: Path, name: str) -> dict:
    return json.loads((fixture_dir / name).read_text())


def meta_encoder(**changes) -> AudioMAEEncoder:
    with torch.device("meta"):
        return AudioMAEEncoder(BASE.replace(**changes))


def test_full_size_finetuned_model_has_the_manifest_keys(fixture_dir: Path) -> None:
    official = manifest(fixture_dir, "manifest_audiomae_vitb_finetuned_as.json")
    backbone = meta_encoder(num_classes=527).backbone
    assert {k: list(v.shape) for k, v in backbone.state_dict().items()} == official["state_dict"]
    assert sum(p.numel() for p in backbone.parameters()) == official["num_parameters"]
    assert [n for n, p in backbone.named_parameters() if not p.requires_grad] == official["requires_grad_false"]


@pytest.mark.parametrize("pool_norm", ["copy", "fresh"])
def test_full_size_pretrained_mae_loads_encoder_part(fixture_dir: Path, pool_norm: str) -> None:
    official = manifest(fixture_dir, "manifest_audiomae_vitb_pretrained_mae.json")
    tensors = {key: torch.empty(shape, device="meta") for key, shape in official["state_dict"].items()}
    encoder = meta_encoder()

    report = load_official_weights(encoder, tensors, source="pretrained.pth", pool_norm=pool_norm)

    assert report.form == "pre-trained MAE"
    model_keys = set(encoder.backbone.state_dict())
    assert set(official["encoder_keys"]) - {"norm.weight", "norm.bias"} == model_keys - {"fc_norm.weight", "fc_norm.bias"}
    if pool_norm == "copy":
        assert sorted(report.ignored) == sorted(official["decoder_keys"])
        assert report.copied == {"fc_norm.weight": "norm.weight", "fc_norm.bias": "norm.bias"}
    else:
        assert sorted(report.ignored) == sorted(official["decoder_keys"] + ["norm.weight", "norm.bias"])
        assert report.initialised == ["fc_norm.weight", "fc_norm.bias"]


def write_pretrained_form(fixture_dir: Path, path: Path) -> dict[str, torch.Tensor]:
    """The tiny fixture re-saved like pretrained.pth: no fc_norm/head, a token norm, a decoder, extras."""
    weights = torch.load(fixture_dir / "tiny_audiomae.pth", weights_only=True)["model"]
    state = {k: v for k, v in weights.items() if not k.startswith(("fc_norm.", "head."))}
    state["norm.weight"], state["norm.bias"] = weights["fc_norm.weight"], weights["fc_norm.bias"]
    state["mask_token"] = torch.zeros(1, 1, 32)
    state["decoder_embed.weight"] = torch.randn(32, 64)
    state["decoder_blocks.0.attn.tau"] = torch.ones(4, 1, 1)
    torch.save({"model": state, "optimizer": torch.optim.SGD([torch.nn.Parameter(torch.ones(1))], lr=0.1).state_dict(),
                "epoch": 32, "args": argparse.Namespace(mask_ratio=0.8, output_dir=Path("/out")),
                "scaler": {"scale": 1024.0, "growth_factor": 2.0, "_growth_tracker": 3}}, path)
    return weights


def test_pretrained_mae_checkpoint_through_public_loader(plugin, fixture_dir, expected, tmp_path: Path) -> None:
    weights = write_pretrained_form(fixture_dir, tmp_path / "pretrained.pth")

    encoder = build(plugin, checkpoint=str(tmp_path / "pretrained.pth"), num_heads=4)

    report = encoder.load_report
    assert report.form == "pre-trained MAE"
    assert sorted(report.ignored) == ["decoder_blocks.0.attn.tau", "decoder_embed.weight", "mask_token"]
    assert sorted(entry.split(" ")[0] for entry in report.file_entries_skipped) == ["args", "epoch", "optimizer", "scaler"]
    assert "3 decoder keys" in report.summary()
    # norm's gain and bias became the pooling norm, so the pooled vector is the fixture's exactly.
    with torch.no_grad():
        pooled = encoder({"features": expected["input.fbank"][:, 0]}).pooled
    torch.testing.assert_close(pooled, expected["pooled"], atol=ATOL, rtol=0)

    fresh = build(plugin, checkpoint=str(tmp_path / "pretrained.pth"), num_heads=4, pretrained_pool_norm="fresh")
    assert torch.equal(fresh.backbone.fc_norm.weight, torch.ones(64))
    assert torch.equal(fresh.backbone.fc_norm.bias, torch.zeros(64))
    assert torch.equal(fresh.backbone.blocks[1].mlp.fc2.weight, weights["blocks.1.mlp.fc2.weight"])


def test_checkpoint_for_another_architecture_is_refused(plugin, fixture_dir, tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"tiny_audiomae\.pth .*embed_dim 64 and depth 2.*'size'"):
        plugin.build_encoder(plugin.options({"size": "base", "checkpoint": str(fixture_dir / "tiny_audiomae.pth")}))
    weights = torch.load(fixture_dir / "tiny_audiomae.pth", weights_only=True)["model"]
    weights["blocks.2.norm1.weight"] = torch.ones(64)
    torch.save({"model": weights}, tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError, match=r"deeper\.pth.*unexpected keys \(e\.g\. blocks\.2\.norm1\.weight"):
        build(plugin, checkpoint=str(tmp_path / "deeper.pth"), num_heads=4)


def test_checkpoint_without_a_stored_head_count_needs_num_heads(plugin, fixture_dir, expected) -> None:
    """The weights fit any head count that divides the width; loading with the preset's would be silent."""
    with pytest.raises(CheckpointError, match=r"tiny_audiomae\.pth does not record the attention head count.*"
                                              r"plugin\.options\.num_heads, 12 for the official"):
        build(plugin, checkpoint=str(fixture_dir / "tiny_audiomae.pth"))
    # Why it must be asked: 2 heads load and run on the same weights, with outputs well off the official ones.
    wrong = build(plugin, checkpoint=str(fixture_dir / "tiny_audiomae.pth"), num_heads=2)
    with torch.no_grad():
        pooled = wrong({"features": expected["input.fbank"][:, 0]}).pooled
    assert (pooled - expected["pooled"]).abs().max() > 10 * ATOL


def test_num_heads_contradicting_the_stored_config_is_refused(plugin, fixture_dir) -> None:
    path = fixture_dir / "tiny_audiomae.safetensors"
    with pytest.raises(CheckpointError, match=r"tiny_audiomae\.safetensors: plugin\.options\.num_heads is 2 "
                                              r"but its stored cfg\.num_heads says 4"):
        build(plugin, checkpoint=str(path), num_heads=2)
    with pytest.raises(CheckpointError, match="num_heads is 2 but its stored cfg.num_heads says 4"):
        build(plugin, checkpoint=str(path), config={"num_heads": 2})
    assert build(plugin, checkpoint=str(path), num_heads=4).config.num_heads == 4  # agreeing is fine


def test_official_args_model_name_gives_the_head_count(plugin, tmp_path: Path) -> None:
    """The official scripts save ``args`` (an argparse.Namespace) whose ``model`` names the architecture."""
    torch.manual_seed(0)
    width = {"embed_dim": 36, "depth": 1, "drop_path_rate": 0.0}  # 36: 12 and 6 heads fit, 16 do not
    original = AudioMAEEncoder(BASE.replace(num_heads=12, **width)).eval()
    with torch.no_grad():
        for block in original.backbone.blocks:  # non-zero biases so every head sees a different input
            block.attn.qkv.bias.normal_()
    path = tmp_path / "checkpoint-99.pth"
    torch.save({"model": original.backbone.state_dict(), "epoch": 99,
                "args": argparse.Namespace(model="vit_base_patch16", output_dir=Path("/out"))}, path)

    options = plugin.options({"size": "tiny", "checkpoint": str(path), "config": width})
    loaded = plugin.build_encoder(options).eval()

    assert loaded.config.num_heads == 12
    fbank = torch.randn(1, 1024, 128)
    with torch.no_grad():
        torch.testing.assert_close(loaded({"features": fbank}).pooled, original({"features": fbank}).pooled,
                                   atol=1e-6, rtol=0)
    # the tiny preset says 4 heads: an export's card carries 12, so the model rebuilds without the checkpoint
    exported = plugin.export_options(options, loaded)
    assert exported.num_heads == 12 and plugin.export_options(plugin.options({"size": "tiny"}), loaded).num_heads == 12
    rebuilt = plugin.build_encoder(exported.model_copy(update={"checkpoint": None})).eval()
    rebuilt.load_state_dict(loaded.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt({"features": fbank}).pooled, loaded({"features": fbank}).pooled,
                                   atol=0, rtol=0)
    with pytest.raises(CheckpointError, match=r"num_heads is 6 but its stored args\.model 'vit_base_patch16' says 12"):
        build(plugin, checkpoint=str(path), config=width, num_heads=6)
    torch.save({"model": original.backbone.state_dict(), "args": argparse.Namespace(model="vit_large_patch16")},
               tmp_path / "mislabelled.pth")
    with pytest.raises(CheckpointError, match=r"mislabelled\.pth: its stored head count 16 does not divide its width 36"):
        build(plugin, checkpoint=str(tmp_path / "mislabelled.pth"), config=width)


def test_num_heads_without_a_checkpoint_overrides_the_preset(plugin) -> None:
    assert build(plugin).config.num_heads == 4  # the tiny preset's
    encoder = build(plugin, num_heads=8)
    assert encoder.config.num_heads == 8 and encoder.backbone.blocks[0].attn.num_heads == 8


@pytest.mark.parametrize("raw, message", [
    ({"num_heads": 5}, "num_heads 5 does not divide embed_dim 64"),
    ({"num_heads": 4, "config": {"num_heads": 8}}, "num_heads 4 contradicts config.num_heads 8"),
    ({"num_heads": 0}, "num_heads"),
])
def test_num_heads_is_checked_with_the_options(plugin, raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        plugin.options({"size": "tiny", **raw})


def test_training_path_shapes_masks_and_augmentation(plugin) -> None:
    options = plugin.options({"size": "tiny", "config": {"drop_path_rate": 0.0}})
    encoder = plugin.build_encoder(options)
    generator = torch.Generator().manual_seed(0)
    clips = [torch.randn(16000 * 12).numpy() * 0.1, torch.randn(16000 * 3).numpy() * 0.1]
    items = [plugin.preprocess(clip, options, train=True, generator=generator) for clip in clips]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}

    features = plugin.featurize(batch, options)
    augmented = plugin.augment(features, options, generator=generator)
    output = encoder(augmented)

    assert output.pooled.shape == (2, 64) and output.tokens.shape == (2, 512, 64)
    assert not torch.equal(augmented["features"], features["features"])
    # Clip 1 was cut to 10 s: 998 real frames, so only the last time patch (frames 1008-1023) is all padding.
    assert int(output.token_padding_mask[0].sum()) == 8
    # Clip 2 (3 s after a random onset): time patches after its last real frame are padding, 8 tokens each.
    real_frames = 1 + (int((~batch["padding_mask"][1]).sum()) - 400) // 160
    assert int((~features["padding_mask"][1]).sum()) == real_frames
    assert int(output.token_padding_mask[1].sum()) == (64 - (real_frames + 15) // 16) * 8
    output.pooled.sum().backward()
    assert encoder.backbone.blocks[0].attn.qkv.weight.grad is not None
    assert encoder.backbone.pos_embed.grad is None  # fixed positions, as in the official models


def test_layers_and_gradient_checkpointing(plugin) -> None:
    encoder = build(plugin, config={"drop_path_rate": 0.0})
    layers = encoder.layers()
    assert len(layers) == 2 and encoder.backbone.fc_norm in list(layers[-1].modules())
    fbank = torch.randn(1, 1024, 128)

    def gradients() -> list[torch.Tensor]:
        encoder.zero_grad()
        encoder({"features": fbank}).pooled.square().sum().backward()
        return [p.grad.clone() for p in encoder.backbone.blocks.parameters()]

    plain = gradients()
    encoder.set_gradient_checkpointing(True)
    assert encoder.backbone.grad_checkpointing
    for with_ckpt, without in zip(gradients(), plain):
        torch.testing.assert_close(with_ckpt, without, atol=1e-6, rtol=1e-5)
    assert build(plugin, gradient_checkpointing=True).backbone.grad_checkpointing


def test_lora_targets_hit_every_block_linear_only(plugin) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    options = plugin.options({"size": "tiny"})
    encoder = plugin.build_encoder(options)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=plugin.lora_targets(options)), encoder)
    wrapped = sorted({name.rsplit(".lora_A", 1)[0] for name, _ in encoder.named_modules() if ".lora_A" in name})
    assert wrapped == sorted(f"backbone.blocks.{i}.{part}" for i in range(2)
                             for part in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"))


@pytest.mark.parametrize("raw, field", [
    ({"sample_rate": 32000}, "sample_rate"),
    ({"clip_seconds": 12.0}, "clip_seconds"),
    ({"size": "huge"}, "size"),
])
def test_invalid_options_name_the_field(plugin, raw: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        plugin.options(raw)


def test_invalid_config_override_is_a_config_error(plugin) -> None:
    with pytest.raises(ConfigError, match="unknown AudioMAE settings.*depht"):
        plugin.build_encoder(plugin.options({"size": "tiny", "config": {"depht": 3}}))


@pytest.mark.gpu
def test_runs_on_cuda(plugin, fixture_dir, expected) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    encoder = build(plugin, checkpoint=str(fixture_dir / "tiny_audiomae.pth"), num_heads=4).cuda()
    options = plugin.options({"size": "tiny"})
    waveform = torch.randn(2, 16000 * 4, device="cuda") * 0.1
    padding_mask = torch.zeros(2, 16000 * 4, dtype=torch.bool, device="cuda")
    padding_mask[1, 16000 * 2:] = True
    features = plugin.featurize({"waveform": waveform, "padding_mask": padding_mask}, options)
    cpu_features = plugin.featurize({"waveform": waveform.cpu(), "padding_mask": padding_mask.cpu()}, options)
    torch.testing.assert_close(features["features"].cpu(), cpu_features["features"], atol=1e-3, rtol=0)
    with torch.no_grad():
        pooled = encoder({"features": expected["input.fbank"][:, 0].cuda()}).pooled
    torch.testing.assert_close(pooled.cpu(), expected["pooled"], atol=1e-4, rtol=0)
