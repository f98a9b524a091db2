"""The batched torch fbank against the official BEATs and AudioMAE preprocessing outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modbind.audio.fbank import FbankParams, frame_padding_mask, kaldi_fbank
from modbind_audio_beats.frontend import BEATS_FBANK
from modbind_audio_mae.frontend import AUDIOMAE_FBANK

# tests/fixtures/conformance/kaldi_fbank: an independent re-implementation should expect about 5e-3 abs on
# the raw log-mel and 5e-4 after normalisation.
RAW_ATOL = 5e-3
NORM_ATOL = 5e-4


def _fixture(conformance_dir: Path, name: str) -> tuple[dict[str, torch.Tensor], list[str]]:
    folder = conformance_dir / "kaldi_fbank"
    tensors = load_file(folder / f"{name}_fbank.safetensors")
    cases = list(json.loads((folder / f"{name}_fbank.json").read_text())["cases"])
    return tensors, cases


def test_beats_preset_matches_official_preprocess(conformance_dir):
    tensors, cases = _fixture(conformance_dir, "beats")
    assert len(cases) == 3
    for case in cases:
        wave = tensors[f"{case}.waveform"][None]
        raw = kaldi_fbank(wave, params=BEATS_FBANK, normalize=False)[0]
        norm = kaldi_fbank(wave, params=BEATS_FBANK)[0]
        assert raw.shape == tensors[f"{case}.fbank_raw"].shape
        torch.testing.assert_close(raw, tensors[f"{case}.fbank_raw"], atol=RAW_ATOL, rtol=0, msg=case)
        torch.testing.assert_close(norm, tensors[f"{case}.fbank"], atol=NORM_ATOL, rtol=0, msg=case)


def test_audiomae_preset_matches_official_dataset(conformance_dir):
    tensors, cases = _fixture(conformance_dir, "audiomae")
    assert len(cases) == 4
    for case in cases:
        wave = tensors[f"{case}.waveform"]  # (1, N)
        norm = kaldi_fbank(wave, params=AUDIOMAE_FBANK)
        assert norm.shape == (1, 1024, 128)
        torch.testing.assert_close(norm, tensors[f"{case}.fbank"], atol=NORM_ATOL, rtol=0, msg=case)
        if f"{case}.fbank_raw" in tensors:
            expected = tensors[f"{case}.fbank_raw"]
            raw = kaldi_fbank(wave, params=AUDIOMAE_FBANK, normalize=False)[0, : expected.shape[0]]
            torch.testing.assert_close(raw, expected, atol=RAW_ATOL, rtol=0, msg=case)


def _pad_batch(waves: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(w.numel() for w in waves)
    batch = torch.zeros(len(waves), longest)
    mask = torch.ones(len(waves), longest, dtype=torch.bool)
    for row, wave in enumerate(waves):
        batch[row, : wave.numel()] = wave
        mask[row, : wave.numel()] = False
    return batch, mask


def test_audiomae_batch_of_different_lengths_equals_each_clip_alone(conformance_dir):
    """Mean removal over real samples and padded frames at the raw pad value make batching exact."""
    tensors, cases = _fixture(conformance_dir, "audiomae")
    batch, mask = _pad_batch([tensors[f"{case}.waveform"][0] for case in cases])
    out = kaldi_fbank(batch, params=AUDIOMAE_FBANK, padding_mask=mask)
    for row, case in enumerate(cases):
        torch.testing.assert_close(out[row], tensors[f"{case}.fbank"][0], atol=NORM_ATOL, rtol=0, msg=case)


def test_beats_batch_real_frames_equal_each_clip_alone_and_mask_marks_the_rest(conformance_dir):
    tensors, cases = _fixture(conformance_dir, "beats")
    waves = [tensors[f"{case}.waveform"] for case in cases]
    batch, mask = _pad_batch(waves)
    out = kaldi_fbank(batch, params=BEATS_FBANK, padding_mask=mask)
    frames = frame_padding_mask(mask, out.shape[1], BEATS_FBANK)
    for row, (case, wave) in enumerate(zip(cases, waves)):
        real = BEATS_FBANK.num_frames(wave.numel())
        assert int((~frames[row]).sum()) == real and not frames[row, :real].any()
        torch.testing.assert_close(out[row, :real], tensors[f"{case}.fbank"], atol=NORM_ATOL, rtol=0, msg=case)


def test_clip_shorter_than_one_window_gives_no_frames_or_padding_rows():
    short = torch.randn(2, BEATS_FBANK.window_samples - 1) * 0.1
    assert kaldi_fbank(short, params=BEATS_FBANK).shape == (2, 0, 128)
    padded = kaldi_fbank(short, params=AUDIOMAE_FBANK)
    expected_pad = (0.0 - AUDIOMAE_FBANK.norm_mean) / AUDIOMAE_FBANK.norm_scale
    assert padded.shape == (2, 1024, 128)
    assert torch.allclose(padded, torch.full_like(padded, expected_pad))


def test_float64_input_stays_float64_and_agrees_with_float32(conformance_dir):
    tensors, _ = _fixture(conformance_dir, "beats")
    wave = tensors["noise_1s.waveform"][None]
    out64 = kaldi_fbank(wave.double(), params=BEATS_FBANK)
    assert out64.dtype == torch.float64
    torch.testing.assert_close(out64.float(), kaldi_fbank(wave, params=BEATS_FBANK), atol=NORM_ATOL, rtol=0)


def test_frame_geometry_and_bad_parameters():
    assert BEATS_FBANK.window_samples == 400 and BEATS_FBANK.shift_samples == 160 and BEATS_FBANK.fft_size == 512
    assert BEATS_FBANK.num_frames(160000) == 998 and BEATS_FBANK.num_frames(399) == 0
    with pytest.raises(ValueError, match="window_type"):
        kaldi_fbank(torch.zeros(1, 1000), params=FbankParams(window_type="triangle"))
    with pytest.raises(ValueError, match="padding_mask shape"):
        kaldi_fbank(torch.zeros(2, 1000), params=BEATS_FBANK, padding_mask=torch.zeros(2, 999, dtype=torch.bool))


@pytest.mark.gpu
def test_runs_on_cuda_and_matches_cpu(conformance_dir):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    tensors, cases = _fixture(conformance_dir, "audiomae")
    batch, mask = _pad_batch([tensors[f"{case}.waveform"][0] for case in cases])
    for params in (BEATS_FBANK, AUDIOMAE_FBANK):
        cpu = kaldi_fbank(batch, params=params, padding_mask=mask)
        gpu = kaldi_fbank(batch.cuda(), params=params, padding_mask=mask.cuda())
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), cpu, atol=NORM_ATOL, rtol=0)
