"""A small generic synthesiser: one :class:`SoundSignature` → a waveform, with nuisance variation.

The tonal part is a sum of (possibly inharmonic) partials with vibrato/siren FM and per-event glides; the
noise part is power-law coloured noise band-limited in the frequency domain. An event envelope (regular
or random rhythm, attack, exponential decay) and amplitude modulation shape both. Nuisances — gain,
pitch jitter, event timing, background noise — change every clip so a class is never one fixed template.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modbind.demo.concepts import SoundSignature

SAMPLE_RATE = 16_000


def coloured_noise(n: int, colour: float, band: tuple[float, float], rng: np.random.Generator,
                   sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Unit-RMS noise with power spectrum ∝ f**-colour inside ``band`` (soft edges), zero outside."""
    size = -(-n // 2048) * 2048  # FFT lengths with small prime factors are many times faster
    spectrum = np.fft.rfft(rng.standard_normal(size))
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    safe = np.maximum(freqs, 1.0)
    shape = safe ** (-colour / 2.0)
    low, high = band
    # Soft band edges (half an octave roll-off) keep the noise from ringing.
    shape *= 1.0 / (1.0 + (low / safe) ** 4) / (1.0 + (safe / high) ** 4)
    signal = np.fft.irfft(spectrum * shape, size)[:n]
    return _unit_rms(signal)


def event_onsets(duration: float, sig: SoundSignature, rng: np.random.Generator) -> np.ndarray:
    """Event start times in seconds: a jittered metronome with random phase, or a Poisson process."""
    if sig.event_rate <= 0:
        return np.zeros(1)
    period = 1.0 / sig.event_rate
    if sig.regular:
        start = rng.uniform(-0.5, 0.5) * period
        times = np.arange(start, duration, period)
        times = times + rng.normal(0.0, 0.04 * period, size=times.shape)
    else:
        count = rng.poisson(sig.event_rate * (duration + sig.event_length)) + 1
        times = rng.uniform(-sig.event_length, duration, size=count)
    return np.sort(times[times < duration])


def _envelope_and_age(n: int, onsets: np.ndarray, sig: SoundSignature, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed event envelopes and, per sample, the seconds since the latest onset (drives glides)."""
    t = np.arange(n) / sample_rate
    if sig.event_rate <= 0:
        return np.ones(n), t
    envelope = np.zeros(n)
    for onset in onsets:
        first = max(0, int(np.ceil(onset * sample_rate)))
        last = min(n, int((onset + sig.event_length) * sample_rate))
        if last <= first:
            continue
        age = t[first:last] - onset
        rise = np.clip(age / max(sig.attack, 1e-4), 0.0, 1.0)
        fall = np.exp(-np.maximum(age - sig.attack, 0.0) / max(sig.decay, 1e-4))
        # A short release at the end of the event avoids clicks.
        release = np.clip((sig.event_length - age) / 0.005, 0.0, 1.0)
        envelope[first:last] += rise * fall * release
    index = np.searchsorted(onsets, t, side="right") - 1
    age = np.where(index >= 0, t - onsets[np.clip(index, 0, None)], t)
    return envelope, age


def render(sig: SoundSignature, duration: float, rng: np.random.Generator, *, pitch: float = 1.0,
           sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """One clip of a concept (unit RMS before the event envelope), ``pitch`` scaling all frequencies."""
    n = max(1, int(round(duration * sample_rate)))
    t = np.arange(n) / sample_rate
    onsets = event_onsets(duration, sig, rng)
    envelope, age = _envelope_and_age(n, onsets, sig, sample_rate)
    parts = []
    if sig.f0 > 0 and sig.noise_mix < 1.0:
        parts.append((1.0 - sig.noise_mix) * _tonal(sig, t, age, rng, pitch, sample_rate))
    if sig.noise_mix > 0:
        band = (sig.noise_band[0] * pitch, min(sig.noise_band[1] * pitch, sample_rate / 2 - 100))
        parts.append(sig.noise_mix * coloured_noise(n, sig.noise_colour, band, rng, sample_rate))
    signal = np.sum(parts, axis=0) * envelope
    if sig.am_depth > 0:
        phase = rng.uniform(0, 2 * np.pi)
        signal *= 1.0 - sig.am_depth * (0.5 + 0.5 * np.sin(2 * np.pi * sig.am_rate * t + phase))
    return signal


def _tonal(sig: SoundSignature, t: np.ndarray, age: np.ndarray, rng: np.random.Generator, pitch: float,
           sample_rate: int) -> np.ndarray:
    fm = 1.0 + sig.fm_depth * np.sin(2 * np.pi * sig.fm_rate * t + rng.uniform(0, 2 * np.pi))
    glide = 2.0 ** (sig.glide * np.clip(age / max(sig.event_length, 1e-3), 0.0, 1.0)) if sig.glide else 1.0
    f0 = sig.f0 * pitch * fm * glide
    if sig.melodic and sig.event_rate > 0:
        f0 = f0 * _note_steps(age, t, rng)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    tone = np.zeros_like(t)
    for k in range(1, sig.partials + 1):
        ratio = k * (1.0 + sig.inharmonicity * (k - 1))
        if np.max(f0) * ratio >= sample_rate / 2 - 200:
            break
        tone += k ** (-sig.tilt) * np.sin(ratio * phase + rng.uniform(0, 2 * np.pi))
    return _unit_rms(tone)


def _note_steps(age: np.ndarray, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A pitch factor that jumps to a random major-scale step at every new event."""
    onset_index = np.cumsum(np.diff(age, prepend=age[0] + 1.0) < 0)
    steps = np.array([0, 2, 4, 5, 7, 9, 11, 12])
    notes = rng.choice(steps, size=int(onset_index.max()) + 1)
    return 2.0 ** (notes[onset_index] / 12.0)


def render_scene(signatures: Sequence[SoundSignature], duration: float, rng: np.random.Generator,
                 sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A clip with every concept of ``signatures`` sounding at once, plus the nuisances of a recording.

    Nuisances: pitch jitter ±6 % per source, level differences of ±4 dB between sources, background
    noise of random colour at 12–35 dB SNR, and an overall gain of −14 to −2 dBFS peak.
    """
    n = max(1, int(round(duration * sample_rate)))
    mix = np.zeros(n)
    for sig in signatures:
        source = render(sig, duration, rng, pitch=float(rng.uniform(0.94, 1.06)), sample_rate=sample_rate)
        mix += _unit_rms(source) * 10 ** (rng.uniform(-4, 4) / 20)
    mix = _unit_rms(mix)
    snr_db = rng.uniform(12, 35)
    background = coloured_noise(n, float(rng.uniform(0, 2)), (40, sample_rate / 2 - 200), rng, sample_rate)
    mix = mix + background * 10 ** (-snr_db / 20)
    peak = float(np.max(np.abs(mix))) or 1.0
    gain = 10 ** (rng.uniform(-14, -2) / 20)
    return (mix / peak * gain).astype(np.float32)


def _unit_rms(signal: np.ndarray) -> np.ndarray:
    rms = float(np.sqrt(np.mean(signal**2)))
    return signal / rms if rms > 1e-12 else signal
