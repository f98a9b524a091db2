"""Decoding, repairs and crop/pad policies of the shared audio front-end, including bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import soundfile
import torch

from modbind.audio.crop import crop_or_pad
from modbind.audio.io import (
    AUDIO_EXTENSIONS,
    MAX_NONFINITE_FRACTION,
    NONFINITE_ZEROED,
    PEAK_NORMALISED,
    AudioClip,
    load_audio,
    to_clip,
)
from modbind.errors import DataError

RATE = 16000


def _tone(seconds: float, rate: int, freq: float = 1000.0, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.stack([mono * (c + 1) / channels for c in range(channels)], axis=1) if channels > 1 else mono


def _peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * rate / len(samples))


# How to write a file for each ending in AUDIO_EXTENSIONS: (libsndfile format, subtype).
WRITERS = {".wav": ("WAV", "PCM_16"), ".rf64": ("RF64", "PCM_16"), ".w64": ("W64", "PCM_16"),
           ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"), ".oga": ("OGG", "VORBIS"), ".opus": ("OGG", "OPUS"),
           ".mp3": ("MP3", "MPEG_LAYER_III"), ".aif": ("AIFF", "PCM_16"), ".aiff": ("AIFF", "PCM_16"),
           ".aifc": ("AIFF", "ALAW"), ".au": ("AU", "PCM_16"), ".snd": ("AU", "ULAW"), ".caf": ("CAF", "PCM_16"),
           ".voc": ("VOC", "PCM_16"), ".sph": ("NIST", "PCM_16")}


def test_the_extension_list_covers_the_common_formats_the_decoder_reads():
    assert {".wav", ".flac", ".ogg", ".mp3", ".opus", ".aif", ".aiff", ".aifc", ".au", ".voc"} <= set(AUDIO_EXTENSIONS)


@pytest.mark.parametrize("suffix", AUDIO_EXTENSIONS)
def test_decodes_every_listed_extension(tmp_path, suffix):
    path = tmp_path / f"tone{suffix}"
    file_format, subtype = WRITERS[suffix]
    soundfile.write(path, _tone(1.0, RATE), RATE, format=file_format, subtype=subtype)
    clip = load_audio(path, RATE)
    assert clip.sample_rate == RATE and clip.samples.dtype == np.float32 and clip.samples.ndim == 1
    assert abs(len(clip.samples) - RATE) < 0.1 * RATE  # lossy codecs add/trim a few frames
    assert abs(_peak_hz(clip.samples, RATE) - 1000.0) < 5.0


def test_missing_file_names_the_file(tmp_path):
    with pytest.raises(DataError, match=r"nothere\.wav not found"):
        load_audio(tmp_path / "nothere.wav", RATE)


def test_zero_byte_file_is_a_clear_error(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.wav is empty \(0 bytes\)"):
        load_audio(path, RATE)


def test_corrupt_header_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not a header" + bytes(200))
    with pytest.raises(DataError, match=r"corrupt\.wav cannot be decoded"):
        load_audio(path, RATE)


def test_header_without_samples_is_a_clear_error(tmp_path):
    path = tmp_path / "nosamples.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(DataError, match=r"nosamples\.wav contains no samples"):
        load_audio(path, RATE)


def test_eight_channels_are_mixed_down(tmp_path):
    path = tmp_path / "octo.wav"
    frames = _tone(0.5, RATE, channels=8)
    soundfile.write(path, frames, RATE, subtype="FLOAT")
    clip = load_audio(path, RATE)
    assert clip.samples.shape == (frames.shape[0],)
    np.testing.assert_allclose(clip.samples, frames.mean(axis=1), atol=1e-6)


def test_96khz_is_resampled_keeping_pitch(tmp_path):
    path = tmp_path / "hires.flac"
    soundfile.write(path, _tone(1.0, 96000, freq=3000.0), 96000, subtype="PCM_24")
    clip = load_audio(path, RATE)
    assert clip.sample_rate == RATE and abs(len(clip.samples) - RATE) <= 2
    assert abs(_peak_hz(clip.samples, RATE) - 3000.0) < 5.0


def test_a_few_nan_samples_are_zeroed_and_the_repair_is_recorded(tmp_path, caplog):
    path = tmp_path / "glitch.wav"
    samples = _tone(1.0, RATE)
    samples[[10, 500, 9000]] = [np.nan, np.inf, -np.inf]
    soundfile.write(path, samples, RATE, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="modbind.audio.io"):
        clip = load_audio(path, RATE)
    assert np.isfinite(clip.samples).all()
    assert clip.samples[[10, 500, 9000]].tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_array_equal(clip.samples[11:500], samples[11:500])
    assert clip.repairs == (NONFINITE_ZEROED,) and "glitch.wav" in caplog.text


def test_float_audio_beyond_full_scale_is_scaled_to_peak_one_and_recorded(tmp_path, caplog):
    path = tmp_path / "hot.wav"
    samples = 30.0 * _tone(1.0, RATE)  # peak 15.0
    soundfile.write(path, samples, RATE, subtype="FLOAT")
    with caplog.at_level("WARNING", logger="modbind.audio.io"):
        clip = load_audio(path, RATE)
    assert clip.repairs == (PEAK_NORMALISED,)
    assert float(np.abs(clip.samples).max()) == pytest.approx(1.0)
    np.testing.assert_allclose(clip.samples, samples / 15.0, atol=1e-6)  # scaled, not clipped
    assert "hot.wav" in caplog.text and "15" in caplog.text
    # In-memory float arrays get the same repair; audio within full scale gets none.
    assert to_clip(samples, RATE, RATE).repairs == (PEAK_NORMALISED,)
    assert to_clip(_tone(1.0, RATE), RATE, RATE).repairs == ()
    soundfile.write(tmp_path / "fine.wav", _tone(1.0, RATE), RATE, subtype="FLOAT")
    assert load_audio(tmp_path / "fine.wav", RATE).repairs == ()


def _wav_header_bomb(path, *, rate: int, frames: int):
    """A 16-bit mono WAV whose header states ``rate`` (e.g. 1 Hz): small on disk, hours long once resampled."""
    data = bytes(2 * frames)
    fmt = struct.pack("<HHIIHH", 1, 1, rate, 2 * rate, 2, 16)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


def test_a_header_declaring_more_than_an_hour_is_refused_before_decoding(tmp_path, monkeypatch):
    path = _wav_header_bomb(tmp_path / "bomb.wav", rate=1, frames=4096)  # 8 KB; 64 M samples at 16 kHz
    assert path.stat().st_size < 9000

    def no_decoding(*args, **kwargs):
        raise AssertionError("the file was decoded")

    monkeypatch.setattr(soundfile.SoundFile, "read", no_decoding)
    with pytest.raises(DataError, match=r"bomb\.wav declares 4,096 s of audio \(4,096 frames at 1 Hz\), more than the "
                                        r"limit of 3,600 s.*max_seconds"):
        load_audio(path, RATE)


def test_audio_plugins_take_the_length_limit_from_their_options(tmp_path):
    from modbind_audio_beats.plugin import BeatsPlugin

    plugin = BeatsPlugin()
    path = _wav_header_bomb(tmp_path / "slow.wav", rate=100, frames=6000)  # declares 60 s
    assert plugin.options({}).max_seconds == 3600.0
    with pytest.raises(DataError, match=r"slow\.wav declares 60 s .*limit of 30 s"):
        plugin.load_item(path, plugin.options({"max_seconds": 30}))
    clip = plugin.load_item(path, plugin.options({"max_seconds": 90}))
    assert clip.seconds == pytest.approx(60.0, abs=0.01)


def test_mostly_nan_file_is_rejected(tmp_path):
    path = tmp_path / "broken.wav"
    samples = _tone(1.0, RATE)
    samples[: int(len(samples) * MAX_NONFINITE_FRACTION * 2)] = np.nan
    soundfile.write(path, samples, RATE, subtype="FLOAT")
    with pytest.raises(DataError, match=r"broken\.wav has \d+ of 16000 samples that are NaN"):
        load_audio(path, RATE)


def test_clip_shorter_than_one_fbank_window_is_padded_not_rejected(tmp_path):
    path = tmp_path / "click.wav"
    soundfile.write(path, _tone(0.005, RATE), RATE)  # 80 samples < 400 (25 ms)
    clip = load_audio(path, RATE)
    assert len(clip.samples) == 80
    wave, mask = crop_or_pad(clip.samples, RATE, train=False, min_length=400)
    assert int((~mask).sum()) == 400 and mask[400:].all()
    np.testing.assert_array_equal(wave[:80].numpy(), clip.samples)


def test_to_clip_accepts_int16_and_channels_first():
    pcm = (np.array([[0, 16384, -32768, 32767]] * 2)).astype(np.int16)  # (channels, samples)
    clip = to_clip(pcm, 8000, 8000)
    np.testing.assert_allclose(clip.samples, [0.0, 0.5, -1.0, 32767 / 32768], atol=1e-7)
    assert to_clip(np.zeros((100, 2), np.float32), RATE, RATE).samples.shape == (100,)
    with pytest.raises(DataError, match="shape"):
        to_clip(np.zeros((2, 2, 2)), RATE, RATE)


def test_eval_policy_takes_the_first_window_or_pads_right():
    samples = np.arange(1, 101, dtype=np.float32)
    wave, mask = crop_or_pad(samples, 40, train=False)
    assert wave.tolist() == samples[:40].tolist() and not mask.any()
    wave, mask = crop_or_pad(samples, 150, train=False)
    assert wave[:100].tolist() == samples.tolist() and (wave[100:] == 0).all()
    assert not mask[:100].any() and mask[100:].all()


def test_random_truncation_picks_random_windows_and_onsets():
    samples = np.arange(1, 101, dtype=np.float32)
    gen = torch.Generator().manual_seed(0)
    starts = set()
    for _ in range(20):
        wave, mask = crop_or_pad(samples, 40, train=True, generator=gen)
        start = int(wave[0].item()) - 1
        assert wave.tolist() == samples[start : start + 40].tolist() and not mask.any()
        starts.add(start)
    assert len(starts) > 5
    onsets = set()
    for _ in range(20):
        wave, mask = crop_or_pad(samples, 300, train=True, generator=gen)
        onset = int(torch.nonzero(wave)[0])
        assert wave[onset : onset + 100].tolist() == samples.tolist()
        assert not mask[: onset + 100].any() and mask[onset + 100 :].all()  # leading silence is content
        onsets.add(onset)
    assert len(onsets) > 5


def test_random_truncation_is_reproducible_with_a_generator():
    samples = np.random.default_rng(0).normal(size=1000).astype(np.float32)
    a = crop_or_pad(samples, 300, train=True, generator=torch.Generator().manual_seed(7))
    b = crop_or_pad(samples, 300, train=True, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_audio_clip_reports_duration():
    assert AudioClip(np.zeros(24000, np.float32), 16000).seconds == 1.5
