"""Exported models: card + safetensors, reload in a fresh process, LoRA merged on export, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modbind.config import AnchorConfig, TrainConfig
from modbind.errors import CheckpointError
import modbind
from modbind.model import AlignedModel, make_card
from train_world import build_separating_anchor, captions, write_imu_world

TESTS = Path(__file__).resolve().parent


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export_world")
    texts = captions(12, seed=1)
    manifest = write_imu_world(root / "imu", texts)
    return {"root": root, "anchor": build_separating_anchor(root / "anchor", texts), "items": manifest.parent}


def anchor_config(world: dict[str, Path]) -> AnchorConfig:
    return AnchorConfig(model=f"local-dir:{world['anchor']}", pretrained=None)


def item_paths(world: dict[str, Path]) -> list[Path]:
    return sorted(world["items"].glob("*.npy"))


def test_untrained_model_embeds_items_and_text_in_the_anchor_space(world, imu_plugin) -> None:
    model = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world), seed=3)
    embeddings = model.encode(item_paths(world), batch_size=5)
    assert embeddings.shape == (12, 32)
    torch.testing.assert_close(embeddings.norm(dim=-1), torch.ones(12))
    assert model.encode_text(["dog cat bird"]).shape == (1, 32)
    assert model.card["plugin"] == "imu_conv" and model.card["metrics"] == {"trained": False}
    assert model.card["anchor_identity"] == model.anchor.identity
    again = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world), seed=3)
    torch.testing.assert_close(again.encode(item_paths(world)), embeddings)  # the seed fixes the control


def test_one_text_one_path_and_a_transformed_image_batch_are_taken_as_meant(world, imu_plugin) -> None:
    from PIL import Image

    model = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world))
    torch.testing.assert_close(model.encode_text("dog cat bird"), model.encode_text(["dog cat bird"]))
    first = item_paths(world)[0]
    torch.testing.assert_close(model.encode(first), model.encode([first]))
    torch.testing.assert_close(model.encode(str(first)), model.encode([first]))
    pictures = [Image.new("RGB", (40, 30), (200, 10, 10)), Image.new("RGB", (30, 40), (10, 10, 200))]
    pixels = torch.stack([model.anchor.image_transform(picture) for picture in pictures])
    torch.testing.assert_close(model.encode_image(pixels), model.encode_image(pictures))


def test_reloaded_in_a_fresh_process_gives_identical_embeddings(world, imu_plugin, tmp_path) -> None:
    model = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world), seed=1)
    out = model.save(tmp_path / "export")
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "card.json"}
    expected = model.encode(item_paths(world))
    script = (
        "import sys, modbind\n"
        "from pathlib import Path\n"
        "from safetensors.torch import save_file\n"
        "model = modbind.load(sys.argv[1])\n"
        "paths = sorted(Path(sys.argv[2]).glob('*.npy'))\n"
        "save_file({'e': model.encode(paths), 't': model.encode_text(['dog cat bird'])}, sys.argv[3])\n"
    )
    result_file = tmp_path / "fresh.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script, str(out), str(world["items"]), str(result_file)],
                   check=True, env=env, cwd=tmp_path)
    fresh = load_file(str(result_file))
    assert torch.equal(fresh["e"], expected)
    torch.testing.assert_close(fresh["t"], model.encode_text(["dog cat bird"]))


def test_lora_adapters_are_merged_into_plain_weights_on_export(world, imu_plugin, tmp_path) -> None:
    from modbind.train.finetune import apply_finetune

    base = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world))
    plain_keys = set(base.model.state_dict())
    train = TrainConfig(finetune="lora", lora={"r": 2, "alpha": 4, "dropout": 0.0})
    apply_finetune(base.model, base.plugin, base.options, train)
    with torch.no_grad():
        for name, param in base.model.named_parameters():
            if "lora_B" in name:
                param.normal_()  # fresh LoRA is a no-op (B = 0); make it matter
    with_adapters = base.encode(item_paths(world))
    base.save(tmp_path / "lora_export")
    assert set(load_file(str(tmp_path / "lora_export" / "model.safetensors"))) == plain_keys
    reloaded = modbind.load(tmp_path / "lora_export")
    torch.testing.assert_close(reloaded.encode(item_paths(world)), with_adapters, rtol=1e-4, atol=1e-5)
    assert any("lora_" in n for n, _ in base.model.named_parameters())  # the live model keeps its adapters


def test_bad_exports_fail_with_a_clear_message(world, imu_plugin, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not an exported modbind model"):
        modbind.load(tmp_path)
    model = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world))
    out = model.save(tmp_path / "export")
    card = json.loads((out / "card.json").read_text())
    (out / "card.json").write_text(json.dumps({**card, "plugin_options": {"window": 32, "width": 16}}))
    with pytest.raises(CheckpointError, match="does not fit plugin 'imu_conv'"):
        modbind.load(out)
    (out / "card.json").write_text(json.dumps({**card, "anchor_identity": "some-other-anchor"}))
    with pytest.raises(CheckpointError, match="was aligned to 'some-other-anchor'"):
        _ = modbind.load(out).anchor


def test_card_records_what_rebuilds_the_model(world, imu_plugin) -> None:
    model = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world))
    card = make_card(model.plugin, model.options, anchor_config(world), "id", model.model,
                     anchor_provider=model._anchor_provider, recipe={"train": {"batch_size": 8}},
                     metrics={"final_loss": 0.5})
    assert card["plugin_options"]["window"] == 32 and card["dim"] == 32 and card["width"] == 32
    assert card["head"] == "linear" and card["recipe"]["train"]["batch_size"] == 8
    assert card["logit_scale"] == pytest.approx(model.logit_scale) and card["modbind_version"]
    assert isinstance(model, AlignedModel)


def test_weights_holding_nan_or_inf_are_never_exported(world, imu_plugin, tmp_path) -> None:
    from modbind.errors import NonFiniteError

    model = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world), seed=1)
    with torch.no_grad():
        model.model.head.weight[0, 0] = float("inf")
    with pytest.raises(NonFiniteError, match=r"refusing to export .*1 weight tensor\(s\) hold NaN or infinite values "
                                             r"\(first: head.weight\)"):
        model.save(tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_the_card_names_the_anchor_weights_actually_loaded(world, imu_plugin, tmp_path) -> None:
    """A local-dir: anchor ignores a pretrained tag (the recipe default is one): the card records None, and
    the anchor it describes loads and matches the identity the model was aligned to."""
    tagged = AnchorConfig(model=f"local-dir:{world['anchor']}", pretrained="laion5b_s13b_b90k")
    model = modbind.untrained("imu_conv", {"window": 32}, tagged)
    assert model.card["anchor"]["model"] == tagged.model and model.card["anchor"]["pretrained"] is None
    reloaded = modbind.load(model.save(tmp_path / "export"))
    assert reloaded.anchor.identity == model.card["anchor_identity"]
    weights = str(world["anchor"] / "open_clip_model.safetensors")  # a weights file does override the folder's
    overridden = modbind.untrained("imu_conv", {"window": 32}, AnchorConfig(model=tagged.model, pretrained=weights))
    assert overridden.card["anchor"]["pretrained"] == weights


def test_an_anchor_that_moved_is_found_with_the_anchor_option(world, imu_plugin, tmp_path) -> None:
    """The card names the anchor's old folder; the identity (a content hash) still ties the model to it."""
    import shutil

    out = modbind.untrained("imu_conv", {"window": 32}, anchor_config(world), seed=2).save(tmp_path / "export")
    expected = modbind.load(out).encode_text(["dog cat bird"])
    moved = shutil.copytree(world["anchor"], tmp_path / "moved-anchor")
    loaded = modbind.load(out, anchor=f"local-dir:{moved}")
    torch.testing.assert_close(loaded.encode_text(["dog cat bird"]), expected)
    other = build_separating_anchor(tmp_path / "other-anchor", captions(12, seed=5))
    with pytest.raises(CheckpointError, match=r"other-anchor is 'sha256:.*' but this model was aligned to"):
        _ = modbind.load(out, anchor=f"local-dir:{other}").anchor
