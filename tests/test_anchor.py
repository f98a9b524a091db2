"""The frozen anchor: a tiny real open_clip model loaded offline through the public path, frozen for good."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from modbind.config import AnchorConfig
from modbind.errors import ConfigError, ModbindError

SENTENCES = [
    "a dog barks loudly in the park",
    "a cat meows softly at night",
    "um cão late alto no parque",
    "ein Hund bellt laut im Park",
    "собака громко лает в парке",
    "кошка тихо мяукает ночью",
    "狗在公园里大声叫",
    "猫在夜里轻轻地叫",
    "犬が公園で大きな声で吠える",
]




@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from modbind.anchor import build_tiny_openclip

    return build_tiny_openclip(tmp_path_factory.mktemp("anchor") / "tiny", SENTENCES, seed=0)


@pytest.fixture(scope="module")
def anchor(tiny_dir: Path):
    from modbind import load_anchor

    return load_anchor(AnchorConfig(model=f"local-dir:{tiny_dir}", pretrained=None))


def test_tiny_anchor_is_a_real_open_clip_model_with_xlmr_text_tower(tiny_dir: Path, anchor) -> None:
    import open_clip
    from open_clip.hf_model import HFTextEncoder
    from open_clip.tokenizer import HFTokenizer

    assert (tiny_dir / "open_clip_config.json").is_file() and (tiny_dir / "open_clip_model.safetensors").is_file()
    assert isinstance(anchor.model, open_clip.CustomTextCLIP)
    assert isinstance(anchor.model.text, HFTextEncoder)
    assert anchor.model.text.config.model_type == "xlm-roberta"
    assert isinstance(anchor.tokenizer, HFTokenizer)
    assert anchor.dim == 32
    assert anchor.logit_scale == pytest.approx(1 / 0.07, rel=1e-4)


def test_latin_cyrillic_and_cjk_tokenize_into_subwords_and_embed(anchor) -> None:
    unk = anchor.tokenizer.tokenizer.unk_token_id
    pad = anchor.tokenizer.tokenizer.pad_token_id
    samples = ["a dog barks", "собака лает", "狗在叫", "犬が吠える", "مرحبا بالعالم"]  # Arabic was never trained on
    ids = anchor.tokenizer(samples)
    for text, row in zip(samples, ids):
        content = row[(row != pad)][1:-1]
        assert len(content) > 0 and not (content == unk).any(), f"{text!r} tokenized to unknowns: {row.tolist()}"
    # trained words become single subword pieces, not characters
    pieces = anchor.tokenizer.tokenizer.tokenize("собака")
    assert len(pieces) < len("собака")
    embeddings = anchor.encode_text(samples)
    assert embeddings.shape == (len(samples), anchor.dim) and embeddings.dtype == torch.float32
    torch.testing.assert_close(embeddings.norm(dim=1), torch.ones(len(samples)))
    distances = torch.cdist(embeddings, embeddings) + torch.eye(len(samples))
    assert distances.min() > 1e-3, "different texts must embed differently"


def test_encode_text_matches_the_untrimmed_open_clip_forward(anchor) -> None:
    """Trimming padding columns is exact, and batching/sorting does not change results."""
    texts = SENTENCES + ["", "short", "a much longer sentence with many more words than the others here"]
    with torch.no_grad():
        reference = torch.nn.functional.normalize(anchor.model.encode_text(anchor.tokenizer(texts)), dim=-1)
    torch.testing.assert_close(anchor.encode_text(texts, batch_size=3), reference, atol=1e-6, rtol=0)


def test_encode_image_gives_normalised_embeddings_for_pil_images(anchor) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)) for h, w in [(40, 50), (64, 32), (32, 32)]]
    out = anchor.encode_image(images, batch_size=2)
    assert out.shape == (3, anchor.dim)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    pixels = torch.stack([anchor.image_transform(im) for im in images])
    torch.testing.assert_close(anchor.encode_image(pixels), out, atol=1e-6, rtol=0)


def test_anchor_is_frozen_by_construction(anchor) -> None:
    assert not any(p.requires_grad for p in anchor.model.parameters())
    assert not anchor.model.training
    assert not isinstance(anchor, torch.nn.Module) and not hasattr(anchor, "parameters")
    with torch.enable_grad():
        assert not anchor.encode_text(["a dog"]).requires_grad


def test_fingerprint_catches_a_modified_parameter(tiny_dir: Path) -> None:
    from modbind import load_anchor
    from modbind.anchor import AnchorChangedError

    anchor = load_anchor(AnchorConfig(model=f"local-dir:{tiny_dir}", pretrained=None))
    before = anchor.fingerprint()
    assert anchor.fingerprint() == before
    anchor.assert_unchanged(before)
    weight = anchor.model.text.transformer.encoder.layer[0].attention.self.query.weight
    with torch.no_grad():
        weight[3, 5] += 1e-4  # one element, a tiny change
    assert anchor.fingerprint() != before
    with pytest.raises(AnchorChangedError, match="encoder.layer.0.attention.self.query.weight"):
        anchor.assert_unchanged(before)
    with torch.no_grad():
        weight[3, 5] -= 1e-4
    weight.requires_grad_(True)
    with pytest.raises(AnchorChangedError, match="unfrozen"):
        anchor.assert_unchanged(before)


def test_fingerprint_sees_swapped_values() -> None:
    from modbind.anchor import tensor_fingerprint

    values = torch.arange(10, dtype=torch.float32)
    swapped = values.clone()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert tensor_fingerprint({"w": values}) == tensor_fingerprint({"w": values.clone()})
    assert tensor_fingerprint({"w": values}) != tensor_fingerprint({"w": swapped})
    assert tensor_fingerprint({"w": values}) != tensor_fingerprint({"v": values})


def test_identity_is_the_content_hash_and_survives_moving_the_folder(tiny_dir: Path, anchor, tmp_path: Path) -> None:
    from modbind.anchor import OpenClipProvider, anchor_identity, build_tiny_openclip

    config = AnchorConfig(model=f"local-dir:{tiny_dir}", pretrained=None)
    assert anchor_identity(config, OpenClipProvider()) == anchor.identity
    assert anchor.identity.startswith("sha256:") and anchor.label == "local-dir:tiny (local)"
    renamed = shutil.copytree(tiny_dir, tmp_path / "renamed-copy")
    assert anchor_identity(AnchorConfig(model=f"local-dir:{renamed}"), OpenClipProvider()) == anchor.identity
    other = build_tiny_openclip(tmp_path / "tiny", SENTENCES, seed=1)
    assert anchor_identity(AnchorConfig(model=f"local-dir:{other}"), OpenClipProvider()) != anchor.identity
    assert anchor_identity(config.model_copy(update={"precision": "bf16"}), OpenClipProvider()) != anchor.identity


def test_loads_from_a_separate_weights_file_and_from_a_moved_folder(tiny_dir: Path, anchor, tmp_path: Path) -> None:
    from modbind import load_anchor

    reference = anchor.encode_text(SENTENCES)
    moved = tmp_path / "moved"
    shutil.copytree(tiny_dir, moved)
    weights = tmp_path / "weights" / "my_anchor.safetensors"
    weights.parent.mkdir()
    (moved / "open_clip_model.safetensors").rename(weights)
    from_file = load_anchor(AnchorConfig(model=f"local-dir:{moved}", pretrained=str(weights)))
    torch.testing.assert_close(from_file.encode_text(SENTENCES), reference, atol=1e-6, rtol=0)
    assert "my_anchor.safetensors" in from_file.label and from_file.identity == anchor.identity
    with pytest.raises(ModbindError, match=r"weights file \(open_clip_model.safetensors\) in .*moved"):
        load_anchor(AnchorConfig(model=f"local-dir:{moved}"))
    # the folder moved away from the absolute text-tower path written in its config
    relocated = tmp_path / "relocated"
    shutil.copytree(tiny_dir, relocated / "a")
    (relocated / "a").rename(relocated / "b")
    loaded = load_anchor(AnchorConfig(model=f"local-dir:{relocated / 'b'}"))
    torch.testing.assert_close(loaded.encode_text(SENTENCES), reference, atol=1e-6, rtol=0)


def test_weights_file_of_the_wrong_architecture_is_a_clear_error(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    from modbind import load_anchor
    from modbind.errors import CheckpointError

    bogus = tmp_path / "bogus.safetensors"
    save_file({"visual.nonsense": torch.zeros(3)}, str(bogus))
    with pytest.raises(CheckpointError, match="bogus.safetensors: does not fit anchor"):
        load_anchor(AnchorConfig(model=f"local-dir:{tiny_dir}", pretrained=str(bogus)))


@pytest.fixture
def empty_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    import huggingface_hub

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_default_anchor_offline_without_weights_names_model_tag_place_and_fetch_command(empty_hf_cache: Path) -> None:
    from modbind import load_anchor
    from modbind.anchor import AnchorWeightsMissing

    with pytest.raises(AnchorWeightsMissing) as caught:
        load_anchor(AnchorConfig())
    message = str(caught.value)
    assert "xlm-roberta-base-ViT-B-32" in message and "laion5b_s13b_b90k" in message
    assert str(empty_hf_cache) in message
    assert "hf download laion/CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k open_clip_pytorch_model.bin" in message
    assert "hf download xlm-roberta-base config.json" in message


def test_only_the_missing_pieces_are_reported(empty_hf_cache: Path) -> None:
    """Weights cached but not the XLM-R config/tokenizer: the message lists exactly those."""
    from modbind.anchor import AnchorWeightsMissing, resolve_openclip

    repo = empty_hf_cache / "models--laion--CLIP-ViT-B-32-xlm-roberta-base-laion5B-s13B-b90k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin").write_bytes(b"not real weights")
    with pytest.raises(AnchorWeightsMissing) as caught:
        resolve_openclip("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")
    message = str(caught.value)
    assert "text-tower config of xlm-roberta-base" in message and "tokenizer of xlm-roberta-base" in message
    assert "weights file" not in message.splitlines()[0] and "laion/CLIP" not in message


def test_hf_hub_model_missing_offline_is_a_clear_error(empty_hf_cache: Path) -> None:
    from modbind import load_anchor
    from modbind.anchor import AnchorWeightsMissing

    with pytest.raises(AnchorWeightsMissing, match="hf download org/some-clip open_clip_config.json"):
        load_anchor(AnchorConfig(model="hf-hub:org/some-clip"))


def test_cli_reports_missing_weights_in_one_line_without_traceback(empty_hf_cache: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from modbind.cli.main import cli

    manifest = tmp_path / "m.jsonl"
    manifest.write_text('{"id": "a", "path": "a.wav", "captions": {"en": ["a dog barks"]}}\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["data", "embed-text", str(manifest), "--cache", str(tmp_path / "cache")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Error: anchor 'xlm-roberta-base-ViT-B-32' (pretrained 'laion5b_s13b_b90k') is not on disk" in result.output


def test_unknown_model_and_tag_suggest_the_right_spelling() -> None:
    from modbind import load_anchor

    with pytest.raises(ConfigError, match="did you mean 'xlm-roberta-base-ViT-B-32'"):
        load_anchor(AnchorConfig(model="xlm-roberta-base-ViT-B32"))
    with pytest.raises(ConfigError, match="laion5b_s13b_b90k"):
        load_anchor(AnchorConfig(pretrained="laion5b_s13b"))
    with pytest.raises(ModbindError, match="does not exist"):
        load_anchor(AnchorConfig(pretrained="/no/such/weights.bin"))


def test_open_clip_provider_is_contributed_through_the_anchor_hook(fresh_registry) -> None:
    from modbind.anchor import OpenClipProvider
    from modbind.plugins import get_registry

    registry = get_registry()
    assert "open_clip" in registry.anchors
    assert registry.anchors.owners["open_clip"].module == "modbind.anchor.plugin"
    for model in ("local-dir:/x", "hf-hub:org/repo", "xlm-roberta-base-ViT-B-32"):
        assert isinstance(registry.anchor_provider(model), OpenClipProvider)
    assert not registry.anchors.get("open_clip").handles("my-own-space")


def _fake_hub_repo(cache: Path, repo: str, files: dict[str, Path | str]) -> Path:
    """Lay out ``repo`` in the Hugging Face cache format, as ``hf download`` would have left it."""
    folder = cache / f"models--{repo.replace('/', '--')}"
    revision = "0123456789abcdef0123456789abcdef01234567"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, content in files.items():
        if isinstance(content, Path):
            shutil.copyfile(content, snapshot / name)
        else:
            (snapshot / name).write_text(content, encoding="utf-8")
    return snapshot


def _text_files(tiny_dir: Path) -> dict[str, Path | str]:
    return {p.name: p for p in tiny_dir.iterdir() if p.name == "config.json" or p.name.startswith("tokenizer")}


def test_hf_hub_model_loads_from_the_hf_cache(tiny_dir: Path, anchor, empty_hf_cache: Path) -> None:
    import json

    from modbind import load_anchor

    _fake_hub_repo(empty_hf_cache, "fake-org/tiny-text", _text_files(tiny_dir))
    config = json.loads((tiny_dir / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"].update(hf_model_name="fake-org/tiny-text", hf_tokenizer_name="fake-org/tiny-text")
    _fake_hub_repo(empty_hf_cache, "fake-org/tiny-clip", {
        "open_clip_config.json": json.dumps(config),
        "open_clip_model.safetensors": tiny_dir / "open_clip_model.safetensors",
    })
    loaded = load_anchor(AnchorConfig(model="hf-hub:fake-org/tiny-clip"))
    assert loaded.label == "hf-hub:fake-org/tiny-clip (hub)" and loaded.identity == anchor.identity
    torch.testing.assert_close(loaded.encode_text(SENTENCES), anchor.encode_text(SENTENCES), atol=1e-6, rtol=0)


def test_open_clip_name_with_a_weights_file_and_text_tower_from_the_hf_cache(
    tiny_dir: Path, anchor, empty_hf_cache: Path, tmp_path: Path
) -> None:
    """The default model's path (registered name, HF text tower by repo id), exercised with tiny files."""
    import json

    import open_clip

    from modbind import load_anchor

    _fake_hub_repo(empty_hf_cache, "fake-org/tiny-text-2", _text_files(tiny_dir))
    model_cfg = json.loads((tiny_dir / "open_clip_config.json").read_text())["model_cfg"]
    model_cfg["text_cfg"].update(hf_model_name="fake-org/tiny-text-2", hf_tokenizer_name="fake-org/tiny-text-2")
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "modbind-test-tiny-xlmr.json").write_text(json.dumps(model_cfg))
    open_clip.add_model_config(configs)
    weights = shutil.copyfile(tiny_dir / "open_clip_model.safetensors", tmp_path / "tiny.safetensors")
    loaded = load_anchor(AnchorConfig(model="modbind-test-tiny-xlmr", pretrained=str(weights), precision="bf16"))
    assert loaded.label == "modbind-test-tiny-xlmr (tiny.safetensors)"
    assert loaded.identity == anchor.identity + "|bf16"  # same files, other precision
    torch.testing.assert_close(loaded.encode_text(SENTENCES), anchor.encode_text(SENTENCES), atol=0.05, rtol=0)
