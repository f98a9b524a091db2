"""SpecAugment: per-example masks within their limits, inside real frames, registered as an augmentation."""

from __future__ import annotations

import pytest
import torch

from modbind.audio.specaugment import SpecAugment, spec_augment
from modbind.plugins import get_registry


def _bands(dropped_rows: torch.Tensor) -> list[tuple[int, int]]:
    """(start, width) of each run of True in a 1-D bool tensor."""
    runs, start = [], None
    for i, value in enumerate(dropped_rows.tolist() + [False]):
        if value and start is None:
            start = i
        if not value and start is not None:
            runs.append((start, i - start))
            start = None
    return runs


def test_masks_are_drawn_per_example_within_limits():
    features = torch.randn(16, 200, 128) + 5.0  # never exactly 0 before masking
    out = spec_augment(features, freq_mask=48, time_mask=96, generator=torch.Generator().manual_seed(0))
    assert out.shape == features.shape and not torch.equal(out, features)
    dropped = out == 0
    kept = ~dropped
    assert torch.equal(out[kept], features[kept])
    freq_bands, time_bands = [], []
    for example in dropped:
        freq_rows = example.all(dim=0)  # a frequency bin masked in every frame
        time_rows = example.all(dim=1)
        freq_bands.append(sum(w for _, w in _bands(freq_rows)))
        time_bands.append(sum(w for _, w in _bands(time_rows)))
        # every dropped cell belongs to a full frequency band or a full time band
        assert torch.equal(example, freq_rows[None, :] | time_rows[:, None])
    assert max(freq_bands) <= 48 and max(time_bands) <= 96
    assert len(set(freq_bands)) > 3 and len(set(time_bands)) > 3  # independent draws per example


def test_time_masks_stay_inside_real_frames():
    features = torch.randn(32, 300, 64) + 5.0
    padding = torch.zeros(32, 300, dtype=torch.bool)
    padding[:, 50:] = True
    out = spec_augment(features, freq_mask=0, time_mask=96, padding_mask=padding, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out[:, 50:], features[:, 50:])
    masked_frames = (out == 0).all(dim=2)
    assert masked_frames[:, :50].sum(dim=1).max() <= 50 and masked_frames.any()


def test_zero_widths_leave_features_unchanged_and_generator_makes_it_reproducible():
    features = torch.randn(4, 100, 32)
    assert torch.equal(spec_augment(features, freq_mask=0, time_mask=0), features)
    a = spec_augment(features, generator=torch.Generator().manual_seed(3), n_freq_masks=2, n_time_masks=2)
    b = spec_augment(features, generator=torch.Generator().manual_seed(3), n_freq_masks=2, n_time_masks=2)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="batch, frames, bins"):
        spec_augment(torch.zeros(100, 32))


def test_registered_augmentation_works_on_featurized_batches(fresh_registry):
    augmentation = get_registry().augmentations.get("spec_augment")
    assert isinstance(augmentation, SpecAugment) and augmentation.modality == "audio"
    batch = {"features": torch.randn(3, 120, 128) + 5.0, "padding_mask": torch.zeros(3, 120, dtype=torch.bool)}
    out = augmentation(batch, generator=torch.Generator().manual_seed(0), freq_mask=20, time_mask=10)
    assert out["padding_mask"] is batch["padding_mask"] and (out["features"] == 0).any()
    assert not (batch["features"] == 0).any()  # the input is not modified in place
    with pytest.raises(KeyError, match="features"):
        augmentation({"waveform": torch.zeros(1, 10)})


@pytest.mark.gpu
@pytest.mark.parametrize("generator_device", ["cuda", "cpu"])
def test_cuda_features_with_a_generator_on_either_device(generator_device):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    features = torch.randn(8, 200, 64, device="cuda") + 5.0
    padding = torch.zeros(8, 200, dtype=torch.bool, device="cuda")
    padding[:, 120:] = True

    def masked(seed: int) -> torch.Tensor:
        generator = torch.Generator(device=generator_device).manual_seed(seed)
        return spec_augment(features, freq_mask=16, time_mask=40, padding_mask=padding, generator=generator)

    out = masked(0)
    assert out.device.type == "cuda" and torch.equal(out, masked(0))
    time_masked = (out == 0).all(dim=2)
    assert time_masked[:, :120].any() and not time_masked[:, 120:].any()  # time masks stay in real frames


def test_per_example_streams_make_each_example_s_masks_independent_of_its_batch():
    """With one stream per example (what the trainer passes), splitting or reordering a batch changes no mask."""
    from modbind.contracts import ItemRandomness

    features = torch.randn(6, 150, 40) + 5.0
    padding = torch.zeros(6, 150, dtype=torch.bool)
    padding[3:, 100:] = True
    seeds = [11, 12, 13, 14, 15, 16]

    def masked(rows: list[int]) -> torch.Tensor:
        return spec_augment(features[rows], freq_mask=10, time_mask=30, n_freq_masks=2, n_time_masks=2,
                            padding_mask=padding[rows], generator=ItemRandomness([seeds[r] for r in rows]))

    whole = masked(list(range(6)))
    assert (whole == 0).any()
    torch.testing.assert_close(torch.cat([masked([0, 1, 2]), masked([3, 4, 5])]), whole, rtol=0, atol=0)
    torch.testing.assert_close(masked([5, 0, 3]), whole[[5, 0, 3]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="2 random streams for a batch of 6"):
        spec_augment(features, generator=ItemRandomness([1, 2]))
