"""read_checkpoint: finds weights in the layouts training scripts write, keeps extras inert, refuses code."""

from __future__ import annotations

import argparse
import collections
import json
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from modbind.checkpoint_io import compare_state, read_checkpoint
from modbind.errors import CheckpointError


def tiny_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torch.nn.Linear(3, 2).state_dict()


def optimizer_state() -> dict:
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def assert_same_tensors(found: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> None:
    assert sorted(found) == sorted(expected)
    for name, tensor in expected.items():
        torch.testing.assert_close(found[name], tensor, rtol=0, atol=0)


def test_training_script_checkpoint_loads_weights_and_reports_extras(tmp_path: Path) -> None:
    weights = tiny_state_dict()
    path = tmp_path / "checkpoint-9.pth"
    torch.save({
        "model": weights,
        "optimizer": optimizer_state(),
        "epoch": 9,
        "scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                   "_growth_tracker": 17},
        "args": argparse.Namespace(lr=1e-3, output_dir=Path("/runs/x"), log=PureWindowsPath("C:/runs/log"),
                                   mask_2d=True),
        "best_map": np.float64(0.473),
        "dtype": np.dtype("float32"),
        "label_counts": collections.Counter({"dog": 3, "rain": 1}),
        "class_weights": np.arange(4, dtype=np.float32),
    }, path)

    checkpoint = read_checkpoint(path)

    assert_same_tensors(checkpoint.tensors, weights)
    skipped_names = {entry.split(" ")[0] for entry in checkpoint.skipped}
    assert skipped_names == {"optimizer", "epoch", "scaler", "args", "best_map", "dtype", "label_counts",
                             "class_weights"}
    assert "optimizer" not in checkpoint.metadata  # holds tensors: training state, not config
    assert checkpoint.metadata["epoch"] == 9
    assert checkpoint.metadata["args"].output_dir == PurePosixPath("/runs/x")
    assert checkpoint.metadata["args"].log == PureWindowsPath("C:/runs/log")
    assert float(checkpoint.metadata["best_map"]) == pytest.approx(0.473)
    assert checkpoint.metadata["label_counts"]["dog"] == 3
    np.testing.assert_array_equal(checkpoint.metadata["class_weights"], np.arange(4, dtype=np.float32))


def test_lightning_checkpoint(tmp_path: Path) -> None:
    weights = {f"sed_model.{k}": v for k, v in tiny_state_dict().items()}
    path = tmp_path / "epoch=3.ckpt"
    torch.save({
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "1.5.9",
        "state_dict": weights,
        "callbacks": {"ModelCheckpoint{'monitor': 'mAP'}": {"best_model_score": torch.tensor(0.4),
                                                            "dirpath": Path("/runs/ckpt")}},
        "optimizer_states": [optimizer_state()],
        "lr_schedulers": [{"last_epoch": 3, "base_lrs": [1e-3]}],
    }, path)

    checkpoint = read_checkpoint(path)

    assert_same_tensors(checkpoint.tensors, weights)
    assert checkpoint.metadata["lr_schedulers"] == [{"last_epoch": 3, "base_lrs": [1e-3]}]
    assert "callbacks" not in checkpoint.metadata and "optimizer_states" not in checkpoint.metadata
    assert sorted(entry.split(" ")[0] for entry in checkpoint.skipped) == [
        "callbacks", "epoch", "global_step", "lr_schedulers", "optimizer_states", "pytorch-lightning_version"]


def test_dict_subclass_is_refused_with_reason(tmp_path: Path) -> None:
    # torch's restricted unpickler cannot fill dict subclasses; the error must say so, not crash obscurely.
    torch.save({"model": tiny_state_dict(), "history": collections.defaultdict(list, {"loss": [1.0]})},
               tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"w\.pth.*defaultdict"):
        read_checkpoint(tmp_path / "w.pth")


@pytest.mark.parametrize("layout", ["flat", "module", "state_dict"])
def test_weight_layouts(tmp_path: Path, layout: str) -> None:
    weights = tiny_state_dict()
    content = weights if layout == "flat" else {layout: weights, "global_steps": 5}
    torch.save(content, tmp_path / "w.bin")
    assert_same_tensors(read_checkpoint(tmp_path / "w.bin").tensors, weights)


def test_non_tensor_values_inside_weights_are_reported(tmp_path: Path) -> None:
    weights = {**tiny_state_dict(), "n_averaged": 4}
    torch.save({"model": weights}, tmp_path / "w.pt")
    checkpoint = read_checkpoint(tmp_path / "w.pt")
    assert "n_averaged" not in checkpoint.tensors
    assert checkpoint.skipped == ["model.n_averaged (int)"]


def test_safetensors_metadata_is_decoded(tmp_path: Path) -> None:
    weights = tiny_state_dict()
    save_file(weights, tmp_path / "w.safetensors", metadata={"cfg": json.dumps({"depth": 2}), "format": "pt"})
    checkpoint = read_checkpoint(tmp_path / "w.safetensors")
    assert_same_tensors(checkpoint.tensors, weights)
    assert checkpoint.metadata == {"cfg": {"depth": 2}, "format": "pt"}
    assert checkpoint.skipped == []


class UnknownObject:
    """A class outside the allow-list: loading must refuse it rather than import and build it."""

    def __init__(self) -> None:
        self.value = 1


class RunsCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unknown_class_is_refused(tmp_path: Path) -> None:
    torch.save({"model": tiny_state_dict(), "extra": UnknownObject()}, tmp_path / "w.pth")
    with pytest.raises(CheckpointError, match=r"w\.pth.*UnknownObject"):
        read_checkpoint(tmp_path / "w.pth")


def test_code_in_pickle_is_not_executed(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"model": tiny_state_dict(), "args": RunsCommand(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=r"refusing to load .*evil\.pth.*system"):
        read_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_errors_name_the_file_and_what_was_found(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found: .*missing.pt"):
        read_checkpoint(tmp_path / "missing.pt")

    (tmp_path / "garbage.pt").write_bytes(b"this is not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        read_checkpoint(tmp_path / "garbage.pt")

    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        read_checkpoint(tmp_path / "bad.safetensors")

    torch.save({"epoch": 1, "optimizer": {}}, tmp_path / "noweights.pt")
    with pytest.raises(CheckpointError, match=r"no weights found in .*noweights\.pt.*epoch \(int\)"):
        read_checkpoint(tmp_path / "noweights.pt")

    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="list.pt holds a list"):
        read_checkpoint(tmp_path / "list.pt")


@pytest.mark.parametrize("name", ["empty.pt", "empty.safetensors"])
def test_an_empty_file_says_it_is_empty(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{name} is empty \(0 bytes\)"):
        read_checkpoint(tmp_path / name)


def test_a_reason_without_text_is_named_by_its_type(tmp_path: Path) -> None:
    # Two bytes of a pickle: torch.load fails with an EOFError that carries no message.
    (tmp_path / "cut.pt").write_bytes(b"\x80\x02")
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(tmp_path / "cut.pt")
    assert str(caught.value).endswith("nor a readable torch checkpoint: EOFError")


def test_compare_state_names_missing_unexpected_and_misshapen_keys() -> None:
    expected = {"embed.weight": (4, 2), "blocks.0.weight": (2, 2), "blocks.1.weight": (2, 2), "norm.bias": (2,)}
    tensors = {"embed.weight": torch.zeros(4, 3), "blocks.0.weight": torch.zeros(2, 2), "decoder.weight": torch.zeros(1)}

    mismatch = compare_state(tensors, expected)

    assert not mismatch.fits
    assert mismatch.missing == ["blocks.1.weight", "norm.bias"]  # model order
    assert mismatch.unexpected == ["decoder.weight"]
    assert mismatch.misshapen == [("embed.weight", (4, 3), (4, 2))]
    assert mismatch.describe() == ("missing 2 keys (e.g. blocks.1.weight, norm.bias); 1 unexpected keys "
                                   "(e.g. decoder.weight); wrong shapes: embed.weight (4, 3) (model: (4, 2))")


def test_compare_state_optional_keys_and_a_fitting_state() -> None:
    state = tiny_state_dict()
    shapes = {key: value.shape for key, value in state.items()}
    assert compare_state(state, shapes).fits
    assert compare_state(state, shapes).describe() == ""

    without_bias = {"weight": state["weight"]}
    assert compare_state(without_bias, shapes, optional=["bias"]).fits
    wrong_optional = {**state, "bias": torch.zeros(5)}
    assert compare_state(wrong_optional, shapes, optional=["bias"]).misshapen == [("bias", (5,), (2,))]


def test_compare_state_shortens_long_lists() -> None:
    expected = {f"blocks.{i}.weight": (1,) for i in range(12)}
    tensors = {f"extra.{i}": torch.zeros(1) for i in range(5)}
    assert compare_state(tensors, expected).describe() == (
        "missing 12 keys (e.g. blocks.0.weight, blocks.1.weight, blocks.2.weight); "
        "5 unexpected keys (e.g. extra.0, extra.1, extra.2)")
    assert compare_state(tensors, expected).describe("tensors", preview=lambda keys: f"{len(keys)} listed") == (
        "missing 12 tensors (12 listed); 5 unexpected tensors (5 listed)")
    misshapen = compare_state({k: torch.zeros(2) for k in expected}, expected).describe()
    assert misshapen.startswith("wrong shapes: blocks.0.weight (2,) (model: (1,)); blocks.1.weight")
    assert misshapen.endswith("; … 9 more")
