"""The audio_beats plugin: equal to the official BEATs on the conformance fixture, and trainable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modbind.audio.io import AudioClip
from modbind.errors import CheckpointError, ConfigError
from modbind.plugins import get_registry
from modbind_audio_beats import attention
from modbind_audio_beats.attention import resolve_kernel
from modbind_audio_beats.config import BASE, BeatsConfig
from modbind_audio_beats.model import BeatsEncoder, masked_mean
from modbind_audio_beats.plugin import BeatsPlugin

ATOL = 1e-4  # tests/fixtures/conformance/beats: atol 1e-4 on features, masks exactly equal
FBANK_ATOL = 5e-4  # tests/fixtures/conformance/kaldi_fbank for an independent fbank


@pytest.fixture(scope="module")
def beats_dir(conformance_dir: Path) -> Path:
    return conformance_dir / "beats"


@pytest.fixture(scope="module")
def io(beats_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(beats_dir / "tiny_beats_io.safetensors")


@pytest.fixture(scope="module")
def plugin() -> BeatsPlugin:
    return BeatsPlugin()


@pytest.fixture(scope="module")
def tiny(beats_dir, plugin):
    options = plugin.options({"checkpoint": str(beats_dir / "tiny_beats.pt")})
    return options, plugin.build_encoder(options).eval()


def _run(plugin, options, encoder, waveform, padding_mask):
    batch = {"waveform": waveform} if padding_mask is None else {"waveform": waveform, "padding_mask": padding_mask}
    features = plugin.featurize(batch, options)
    with torch.no_grad():
        outputs, patch_mask = encoder.extract_all(features["features"], features["padding_mask"] if padding_mask is not None else None)
    return features, outputs, patch_mask


@pytest.mark.parametrize("case,source,mask_name", [
    ("masked", "batch_source", "input.batch_padding_mask"),
    ("zeromask", "batch_source", "zeros"),
    ("nomask", "batch_source", None),
    ("single", "single_source", None),
])
def test_reproduces_official_outputs(tiny, plugin, io, case, source, mask_name):
    options, encoder = tiny
    waveform = io[f"input.{source}"]
    masks = {"zeros": torch.zeros(waveform.shape, dtype=torch.bool), None: None}
    mask = io[mask_name] if mask_name in io else masks[mask_name]
    features, outputs, patch_mask = _run(plugin, options, encoder, waveform, mask)
    torch.testing.assert_close(features["features"], io[f"input.{source}_fbank"], atol=FBANK_ATOL, rtol=0)
    names = ["patch_embed_layernorm", "post_extract_proj"] + [f"encoder_layer_{i}" for i in range(len(outputs) - 2)]
    for name, tensor in zip(names, outputs):
        if f"{case}.{name}" in io:
            torch.testing.assert_close(tensor, io[f"{case}.{name}"], atol=ATOL, rtol=0, msg=f"{case}.{name}")
    torch.testing.assert_close(outputs[-1], io[f"{case}.features"], atol=ATOL, rtol=0)
    if case == "masked":
        assert torch.equal(features["padding_mask"], io["masked.fbank_padding_mask"])
    if f"{case}.padding_mask_out" in io:
        assert torch.equal(patch_mask, io[f"{case}.padding_mask_out"])


def test_forward_pools_over_real_patches(tiny, plugin, io):
    options, encoder = tiny
    features = plugin.featurize({"waveform": io["input.batch_source"], "padding_mask": io["input.batch_padding_mask"]}, options)
    with torch.no_grad():
        out = encoder(features)
    assert out.pooled.shape == (2, 64) and out.tokens.shape == (2, 144, 64)
    assert torch.equal(out.token_padding_mask, io["masked.padding_mask_out"])
    real = ~io["masked.padding_mask_out"][1]
    torch.testing.assert_close(out.pooled[1], io["masked.features"][1][real].mean(dim=0), atol=ATOL, rtol=0)
    torch.testing.assert_close(out.pooled[0], io["masked.features"][0].mean(dim=0), atol=ATOL, rtol=0)


@pytest.mark.parametrize("manifest", ["manifest_beats_iter3plus_pretrained.json", "manifest_beats_iter3plus_finetuned_as.json"])
def test_full_size_models_have_the_official_keys_and_shapes(beats_dir, manifest):
    expected = json.loads((beats_dir / manifest).read_text())
    with torch.device("meta"):
        model = BeatsEncoder(BeatsConfig.from_dict(expected["cfg"]))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == expected["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == expected["num_unique_parameters"]
    tables = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Embedding)]
    assert tables == ["encoder.layers.0.self_attn.relative_attention_bias"]  # one table for every layer
    assert len(expected["keys_sharing_one_tensor"][0]) == model.config.encoder_layers
    if "predictor.weight" not in expected["state_dict"]:
        assert BeatsConfig.from_dict(expected["cfg"]) == BASE


def test_plugin_is_registered_and_end_to_end_on_a_raw_clip(fresh_registry, beats_dir):
    plugin = get_registry().encoder("audio_beats")
    assert isinstance(plugin, BeatsPlugin) and plugin.modality == "audio" and ".flac" in plugin.file_extensions
    options = plugin.options({"checkpoint": str(beats_dir / "tiny_beats.pt"), "clip_seconds": 2.0})
    encoder = plugin.build_encoder(options).eval()
    clips = [AudioClip(np.random.default_rng(0).normal(0, 0.1, 48000).astype(np.float32), 16000),
             AudioClip(np.random.default_rng(1).normal(0, 0.1, 80).astype(np.float32), 16000),  # < one window
             AudioClip(np.random.default_rng(2).normal(0, 0.1, 44100).astype(np.float32), 44100)]
    items = [plugin.preprocess(clip, options, train=False) for clip in clips]
    batch = {key: torch.stack([item[key] for item in items]) for key in items[0]}
    assert batch["waveform"].shape == (3, 32000)
    features = plugin.featurize(batch, options)
    with torch.no_grad():
        out = encoder(features)
    assert out.pooled.shape == (3, 64) and torch.isfinite(out.pooled).all()
    assert (~out.token_padding_mask[1]).sum() >= 1  # the short clip still has a real patch


def test_gradient_checkpointing_gives_the_same_gradients(plugin):
    options = plugin.options({"size": "tiny", "layerdrop": 0.0, "clip_seconds": 1.0})
    torch.manual_seed(0)
    plain = plugin.build_encoder(options).train()
    ckpt_options = plugin.options({"size": "tiny", "layerdrop": 0.0, "clip_seconds": 1.0, "gradient_checkpointing": True})
    checkpointed = plugin.build_encoder(ckpt_options).train()
    checkpointed.load_state_dict(plain.state_dict())
    assert checkpointed.encoder.gradient_checkpointing and not plain.encoder.gradient_checkpointing
    waveform = torch.randn(2, 16000) * 0.1
    mask = torch.zeros(2, 16000, dtype=torch.bool)
    mask[1, 9000:] = True
    features = plugin.featurize({"waveform": waveform, "padding_mask": mask}, options)
    grads = []
    for model in (plain, checkpointed):
        model.zero_grad()
        model(features).pooled.square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(plain.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
def test_layerdrop_compiles_to_one_graph_that_skips_like_eager(plugin, device):
    """Released checkpoints train with layerdrop 0.05. A branch on the draw inside the layer loop sent the
    whole compiled forward back to eager and recompiled on every step seed; now the draw happens before the
    forward and the compiled graph selects each layer's result, with the same outputs and gradients."""
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    options = plugin.options({"size": "tiny", "layerdrop": 0.5, "clip_seconds": 1.0,
                              "config": {"encoder_layers": 4, "dropout": 0.0, "attention_dropout": 0.0,
                                         "activation_dropout": 0.0}})
    torch.manual_seed(0)
    encoder = plugin.build_encoder(options).train().to(device)
    features = plugin.featurize({"waveform": torch.randn(2, 16000, device=device) * 0.1}, options)
    compiled = torch.compile(encoder, backend="eager", fullgraph=True)  # fullgraph: a graph break fails
    patterns = set()
    with torch._dynamo.config.patch(error_on_recompile=True):
        for seed in range(6):
            encoder.set_step_seed(seed)
            patterns.add(tuple(encoder.encoder.kept_layers))
            assert encoder.encoder.kept_mask.device.type == device
            grads = []
            for model in (encoder, compiled):
                encoder.zero_grad()
                out = model(features).pooled
                out.square().sum().backward()
                grads.append({n: p.grad if p.grad is not None else torch.zeros_like(p)
                              for n, p in encoder.named_parameters()})
                grads[-1]["output"] = out.detach()
            torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    assert len(patterns) > 1  # the seeds really chose different layers to skip


@pytest.fixture
def flex_calls(monkeypatch) -> list[str]:
    """Records each FlexAttention call, so a test knows the flex path ran rather than SDPA."""
    calls: list[str] = []
    real = attention._flex

    def counted(*args, **kwargs):
        calls.append("flex")
        return real(*args, **kwargs)

    monkeypatch.setattr(attention, "_flex", counted)
    return calls


UNFUSED_FLEX = "ignore:flex_attention called without torch.compile"  # the CPU runs torch's reference, on purpose


@pytest.mark.filterwarnings(UNFUSED_FLEX)
@pytest.mark.parametrize("case,source,mask_name", [
    ("masked", "batch_source", "input.batch_padding_mask"),
    ("nomask", "batch_source", None),
    ("single", "single_source", None),
])
def test_flex_attention_reproduces_official_outputs(beats_dir, plugin, io, flex_calls, case, source, mask_name):
    options = plugin.options({"checkpoint": str(beats_dir / "tiny_beats.pt"), "attention": "flex"})
    encoder = plugin.build_encoder(options).eval()
    features, outputs, patch_mask = _run(plugin, options, encoder, io[f"input.{source}"], io.get(mask_name))
    assert len(flex_calls) == encoder.config.encoder_layers
    torch.testing.assert_close(outputs[-1], io[f"{case}.features"], atol=ATOL, rtol=0)
    for index in range(encoder.config.encoder_layers):
        if f"{case}.encoder_layer_{index}" in io:
            torch.testing.assert_close(outputs[2 + index], io[f"{case}.encoder_layer_{index}"], atol=ATOL, rtol=0)


def _parameter_gradients(plugin, options, kernel, dtype, waveform, mask) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Outputs and parameter gradients of a scalar loss over every output token of the fixture model."""
    encoder = plugin.build_encoder(options.model_copy(update={"attention": kernel})).to(dtype).train()
    features = plugin.featurize({"waveform": waveform, "padding_mask": mask}, options)
    out = encoder({"features": features["features"].to(dtype), "padding_mask": features["padding_mask"]})
    weights = torch.linspace(-1.0, 1.0, out.tokens.shape[-1], dtype=dtype)
    (out.tokens * weights).square().sum().backward()
    return out.tokens.detach(), {n: p.grad for n, p in encoder.named_parameters()}


# float64 shows the two paths compute the same function (differences are rounding only); float32 is what
# training runs: its tolerance is that of the gradient-checkpointing comparison above.
@pytest.mark.filterwarnings(UNFUSED_FLEX)
@pytest.mark.parametrize("dtype,atol,rtol", [(torch.float64, 1e-10, 1e-8), (torch.float32, 1e-5, 1e-4)])
def test_flex_and_sdpa_give_the_same_outputs_and_gradients(beats_dir, plugin, io, monkeypatch, flex_calls,
                                                           dtype, atol, rtol):
    """Forward and every parameter's gradient, on the fixture weights and its padded batch (row 1 is 30 %
    padding). torch refuses FlexAttention's backward on the CPU before running it; its unfused reference
    (the same score_mod and block mask, differentiated by torch) is what is lifted here and compared."""
    from torch.nn.attention import flex_attention as torch_flex

    monkeypatch.setattr(torch_flex, "_validate_device", lambda *tensors: None)
    options = plugin.options({"checkpoint": str(beats_dir / "tiny_beats.pt"), "layerdrop": 0.0})
    waveform, mask = io["input.batch_source"].to(dtype), io["input.batch_padding_mask"]
    sdpa_out, sdpa_grads = _parameter_gradients(plugin, options, "sdpa", dtype, waveform, mask)
    assert not flex_calls
    flex_out, flex_grads = _parameter_gradients(plugin, options, "flex", dtype, waveform, mask)
    assert flex_calls
    torch.testing.assert_close(flex_out, sdpa_out, atol=atol, rtol=rtol)
    assert sdpa_grads.keys() == flex_grads.keys()
    for name, grad in sdpa_grads.items():
        if "relative_attention_bias" in name or "grep" in name:  # what only the score_mod reaches
            assert grad.abs().max() > 1e-4, name
        torch.testing.assert_close(flex_grads[name], grad, atol=atol, rtol=rtol, msg=name)


@pytest.mark.filterwarnings(UNFUSED_FLEX)
def test_flex_says_why_it_cannot_train_on_the_cpu(beats_dir, plugin, io):
    options = plugin.options({"checkpoint": str(beats_dir / "tiny_beats.pt"), "layerdrop": 0.0, "attention": "flex"})
    encoder = plugin.build_encoder(options).train()
    features = plugin.featurize({"waveform": io["input.batch_source"]}, options)
    with pytest.raises(ConfigError, match="attention 'flex' cannot run here .*backward on CPU.*use attention: auto or sdpa"):
        encoder(features)


def test_attention_option_picks_the_kernel(plugin):
    assert plugin.build_encoder(plugin.options({"size": "tiny"})).encoder.attention == "auto"
    assert plugin.build_encoder(plugin.options({"size": "tiny", "attention": "sdpa"})).encoder.attention == "sdpa"
    with pytest.raises(ConfigError, match="attention"):
        plugin.options({"attention": "flash"})
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_kernel("auto", cpu, dropout_active=False) == "sdpa"
    assert resolve_kernel("auto", cuda, dropout_active=False) == "flex"
    assert resolve_kernel("auto", cuda, dropout_active=True) == "sdpa"  # flex has no attention dropout
    assert resolve_kernel("sdpa", cuda, dropout_active=False) == "sdpa"
    assert resolve_kernel("flex", cpu, dropout_active=False) == "flex"
    with pytest.raises(ConfigError, match="'flex' has no attention dropout"):
        resolve_kernel("flex", cuda, dropout_active=True)


def test_layers_and_lora_targets_name_real_modules(plugin):
    options = plugin.options({"size": "tiny", "config": {"encoder_layers": 3}})
    encoder = plugin.build_encoder(options)
    assert len(encoder.layers()) == 3 and encoder.width == 64
    names = [name for name, _ in encoder.named_modules()]
    for target in plugin.lora_targets(options):
        assert sum(name.endswith(f".{target}") for name in names) == 3
        assert isinstance(encoder.get_submodule(f"encoder.layers.0.self_attn.{target}"), torch.nn.Linear)


def test_spec_augment_switch(plugin):
    features = {"features": torch.randn(2, 300, 128) + 5.0, "padding_mask": torch.zeros(2, 300, dtype=torch.bool)}
    on = plugin.augment(features, plugin.options({}), torch.Generator().manual_seed(0))
    assert (on["features"] == 0).any()
    off = plugin.augment(features, plugin.options({"spec_augment": False}))
    assert off["features"] is features["features"]


def test_options_reject_what_beats_cannot_do(plugin):
    with pytest.raises(ConfigError, match="16000 Hz"):
        plugin.options({"sample_rate": 44100})
    with pytest.raises(ConfigError, match="unknown key 'sise'.*did you mean 'size'"):
        plugin.options({"sise": "tiny"})
    with pytest.raises(ConfigError, match="encoder_layer"):
        plugin.build_encoder(plugin.options({"size": "tiny", "config": {"encoder_layer": 3}}))


def test_bad_checkpoints_fail_with_the_reason(tmp_path, beats_dir, plugin):
    tensors = load_file(beats_dir / "tiny_beats.safetensors")
    cfg = json.loads((beats_dir / "tiny_beats_config.json").read_text())
    no_cfg = tmp_path / "no_cfg.safetensors"
    save_file(tensors, no_cfg)
    with pytest.raises(CheckpointError, match="no BEATs 'cfg'"):
        plugin.load_checkpoint(no_cfg, plugin.options({}))
    wrong = tmp_path / "wrong.pt"
    torch.save({"cfg": {**cfg, "encoder_ffn_embed_dim": 256}, "model": tensors}, wrong)
    with pytest.raises(CheckpointError, match=r"wrong shapes: encoder\.layers\.0\.fc1\.weight"):
        plugin.load_checkpoint(wrong, plugin.options({}))
    partial = tmp_path / "partial.pt"
    torch.save({"cfg": cfg, "model": {k: v for k, v in tensors.items() if "fc2" not in k}}, partial)
    with pytest.raises(CheckpointError, match="missing 4 keys"):
        plugin.load_checkpoint(partial, plugin.options({}))


def test_state_dict_saves_as_safetensors_and_reloads(tmp_path, beats_dir, plugin):
    """Every layer lists the shared table (as officially) without sharing storage, so safetensors accepts it."""
    encoder = plugin.load_checkpoint(beats_dir / "tiny_beats.pt", plugin.options({}))
    state = encoder.state_dict()
    official = load_file(beats_dir / "tiny_beats.safetensors")
    assert state.keys() == official.keys() and all(torch.equal(state[k], official[k]) for k in official)
    from_safetensors = plugin.load_checkpoint(beats_dir / "tiny_beats.safetensors", plugin.options({}))
    assert from_safetensors.config == encoder.config
    assert all(torch.equal(from_safetensors.state_dict()[k], official[k]) for k in official)
    save_file(state, tmp_path / "copy.safetensors")
    fresh = plugin.build_encoder(plugin.options({"size": "tiny"}))
    with torch.no_grad():
        fresh.encoder.layers[0].self_attn.relative_attention_bias.weight.zero_()
    fresh.load_state_dict(load_file(tmp_path / "copy.safetensors"), strict=True)
    assert all(torch.equal(fresh.state_dict()[k], official[k]) for k in official)


def test_masked_mean_ignores_padding():
    tokens = torch.tensor([[[1.0], [3.0], [100.0]]])
    assert masked_mean(tokens, torch.tensor([[False, False, True]])).item() == 2.0
    assert masked_mean(tokens, None).item() == pytest.approx(104 / 3)


@pytest.mark.gpu
def test_runs_on_cuda(tiny, plugin, io):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    options, encoder = tiny
    batch = {"waveform": io["input.batch_source"].cuda(), "padding_mask": io["input.batch_padding_mask"].cuda()}
    gpu = BeatsEncoder(encoder.config).cuda().eval()
    gpu.load_state_dict(encoder.state_dict())
    with torch.no_grad():
        out = gpu(plugin.featurize(batch, options))
    torch.testing.assert_close(out.tokens.cpu(), io["masked.features"], atol=1e-3, rtol=0)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_compiled_flex_trains_like_sdpa_on_cuda(beats_dir, plugin, io, precision):
    """The fused (compiled) FlexAttention kernel: same outputs and gradients as SDPA on the fixture."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    options = plugin.options({"checkpoint": str(beats_dir / "tiny_beats.pt"), "layerdrop": 0.0})
    batch = {"waveform": io["input.batch_source"].cuda(), "padding_mask": io["input.batch_padding_mask"].cuda()}
    results = {}
    for kernel in ("sdpa", "flex"):
        encoder = plugin.build_encoder(options.model_copy(update={"attention": kernel})).cuda().train()
        features = plugin.featurize(batch, options)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
            tokens = encoder(features).tokens
        tokens.float().square().sum().backward()
        results[kernel] = tokens.float().detach(), {n: p.grad.float() for n, p in encoder.named_parameters()}
    atol, rtol = (1e-4, 1e-3) if precision == "fp32" else (5e-2, 5e-2)
    torch.testing.assert_close(results["flex"][0], results["sdpa"][0], atol=atol, rtol=rtol)
    for name, grad in results["sdpa"][1].items():
        scale = grad.abs().max().clamp_min(1e-6)
        torch.testing.assert_close(results["flex"][1][name] / scale, grad / scale, atol=atol, rtol=rtol, msg=name)
