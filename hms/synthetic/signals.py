"""Class-specific EEG morphology on a continuous multichannel recording, and Kaggle's spectrogram of it."""

from __future__ import annotations

import numpy as np

from ..constants import CHAINS, EEG_COLUMNS, EEG_RATE, REGIONS, SPEC_BINS, SPEC_NFFT, SPEC_ROW_SECONDS

SCALP = EEG_COLUMNS[:-1]
# Rough 10-20 positions: x from left (-1) to right (+1), y from front (+1) to back (-1).
POSITIONS = np.array([
    (-0.3, 0.95), (-0.4, 0.5), (-0.5, 0.0), (-0.4, -0.5), (-0.8, 0.6), (-1.0, 0.0), (-0.8, -0.6), (-0.3, -0.95),
    (0.0, 0.5), (0.0, 0.0), (0.0, -0.5),
    (0.3, 0.95), (0.4, 0.5), (0.5, 0.0), (0.4, -0.5), (0.8, 0.6), (1.0, 0.0), (0.8, -0.6), (0.3, -0.95),
])
PAIR_INDEX = np.array([[(SCALP.index(a), SCALP.index(b)) for a, b in CHAINS[r]] for r in REGIONS])  # (4, 4, 2)


def background(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """(samples, 20) µV: 1/f scalp background with an alpha rhythm and slow drifts, plus an EKG channel."""
    n = int(seconds * EEG_RATE)
    freqs = np.fft.rfftfreq(n, 1 / EEG_RATE)
    shape = 1 / np.maximum(freqs, 0.5) ** 0.9
    shape *= 1 + 1.5 * np.exp(-0.5 * ((freqs - rng.uniform(8, 11)) / 0.8) ** 2)  # alpha peak
    shape[freqs > 70] *= 0.1
    white = rng.standard_normal((len(SCALP), len(freqs))) + 1j * rng.standard_normal((len(SCALP), len(freqs)))
    common = rng.standard_normal(len(freqs)) + 1j * rng.standard_normal(len(freqs))
    mixed = 0.7 * white + 0.5 * common  # channels share part of their activity, as neighbouring electrodes do
    scalp = np.fft.irfft(mixed * shape, n=n, axis=1)
    scalp *= rng.uniform(18, 30) / scalp.std(axis=1, keepdims=True)
    scalp += rng.normal(0, 20, (len(SCALP), 1))  # per-channel offsets, as in Kaggle's files
    return np.vstack([scalp, _ekg(rng, n)]).T


def _ekg(rng, n) -> np.ndarray:
    rate = rng.uniform(0.9, 1.6)  # beats per second
    t = np.arange(n) / EEG_RATE
    phase = (t * rate + rng.uniform()) % 1.0
    beat = 300 * np.exp(-0.5 * ((phase - 0.3) / 0.012) ** 2) - 60 * np.exp(-0.5 * ((phase - 0.6) / 0.05) ** 2)
    return beat + rng.normal(0, 8, n) + rng.normal(0, 30)


def spatial_gain(rng, kind: str) -> np.ndarray:
    """(19,) field of a pattern: focal over one hemisphere, or generalised with a front-back gradient.

    Each electrode also gets its own gain, so neighbours differ and the pattern survives the
    bipolar differences (a perfectly uniform field would cancel in every pair)."""
    jitter = rng.uniform(0.4, 1.4, len(POSITIONS))
    if kind == "lateral":
        side = rng.choice([-1.0, 1.0])
        focus = np.array([side * rng.uniform(0.4, 1.0), rng.uniform(-0.8, 0.8)])
        distance = np.linalg.norm(POSITIONS - focus, axis=1)
        gain = np.exp(-0.5 * (distance / rng.uniform(0.5, 0.8)) ** 2)
        return gain * jitter * (POSITIONS[:, 0] * side > -0.05)
    front = rng.uniform(0.3, 0.8)
    return ((1 - front / 2) + front / 2 * POSITIONS[:, 1]) * jitter


def _discharges(rng, n, period_s) -> np.ndarray:
    """A train of sharp biphasic discharges (spike then slow wave) every `period_s` seconds, with jitter."""
    out = np.zeros(n)
    t = np.arange(int(0.6 * EEG_RATE)) / EEG_RATE
    shape = -np.exp(-0.5 * ((t - 0.05) / 0.015) ** 2) + 0.45 * np.exp(-0.5 * ((t - 0.22) / 0.07) ** 2)
    start = rng.uniform(0, period_s)
    while start * EEG_RATE < n:
        i = int(start * EEG_RATE)
        piece = shape[: n - i]
        out[i:i + len(piece)] += piece
        start += period_s * rng.uniform(0.9, 1.1)
    return out


def _rhythm(rng, n, f_start, f_end) -> np.ndarray:
    freq = np.linspace(f_start, f_end, n)
    phase = 2 * np.pi * np.cumsum(freq) / EEG_RATE + rng.uniform(0, 2 * np.pi)
    return np.sin(phase) + 0.3 * np.sin(2 * phase + 0.5)


def pattern(rng, kind: str, n: int) -> np.ndarray:
    """(n, 19) µV of one class's morphology at full strength."""
    if kind == "seizure":  # evolving rhythmic 3-8 Hz, often focal
        f0 = rng.uniform(3, 5)
        wave = 200 * _rhythm(rng, n, f0, min(8.0, f0 + rng.uniform(1.5, 3.5)))
        gain = spatial_gain(rng, "lateral" if rng.uniform() < 0.5 else "general")
    elif kind == "lpd":
        wave, gain = 300 * _discharges(rng, n, rng.uniform(0.6, 1.8)), spatial_gain(rng, "lateral")
    elif kind == "gpd":
        wave, gain = 300 * _discharges(rng, n, rng.uniform(0.4, 1.2)), spatial_gain(rng, "general")
    elif kind == "lrda":
        f = rng.uniform(1, 3)
        wave, gain = 180 * _rhythm(rng, n, f, f), spatial_gain(rng, "lateral")
    elif kind == "grda":
        f = rng.uniform(1, 3)
        wave, gain = 180 * _rhythm(rng, n, f, f), spatial_gain(rng, "general")
    elif kind == "other":  # artifacts: eye blinks on the frontal poles and bursts of muscle activity
        return _artifacts(rng, n)
    else:
        raise ValueError(f"unknown pattern {kind!r}")
    return wave[:, None] * gain[None, :]


def _artifacts(rng, n) -> np.ndarray:
    out = np.zeros((n, len(SCALP)))
    t = np.arange(n) / EEG_RATE
    for centre in rng.uniform(0, n / EEG_RATE, max(1, int(n / EEG_RATE / 4))):
        blink = 300 * np.exp(-0.5 * ((t - centre) / 0.12) ** 2)
        out[:, [SCALP.index("Fp1"), SCALP.index("Fp2")]] += blink[:, None]
        out[:, [SCALP.index("F7"), SCALP.index("F8")]] += 0.4 * blink[:, None]
    for start in rng.uniform(0, n / EEG_RATE, max(1, int(n / EEG_RATE / 10))):
        i, length = int(start * EEG_RATE), int(rng.uniform(1, 4) * EEG_RATE)
        burst = rng.normal(0, 100, (min(length, n - i), len(SCALP)))
        out[i:i + length] += burst * (np.abs(POSITIONS[:, 0]) > 0.6)  # temporal muscle
    return out


def envelope(n: int, ramp_s: float = 1.0) -> np.ndarray:
    """1 inside a segment, raised-cosine ramps at both ends, so patterns start and stop smoothly."""
    ramp = min(int(ramp_s * EEG_RATE), n // 2)
    env = np.ones(n)
    edge = 0.5 - 0.5 * np.cos(np.linspace(0, np.pi, ramp))
    env[:ramp], env[n - ramp:] = edge, edge[::-1]
    return env


def kaggle_spectrogram(recording: np.ndarray) -> np.ndarray:
    """(rows, 401) as Kaggle's: time (1, 3, 5 ... s), then per region LL, RL, LP, RP the mean of its four
    bipolar pairs' power spectra (µV²/Hz, bins 0.59-19.92 Hz), one row per 2 s; NaN where the signal is."""
    n = len(recording)
    step = SPEC_ROW_SECONDS * EEG_RATE
    rows = n // step
    centres = np.arange(rows) * step + step // 2
    half = SPEC_NFFT // 2
    pairs = recording[:, PAIR_INDEX[..., 0]] - recording[:, PAIR_INDEX[..., 1]]  # (n, 4, 4)
    padded = np.pad(pairs, ((half, half), (0, 0), (0, 0)))
    window = np.hanning(SPEC_NFFT)
    frames = np.lib.stride_tricks.sliding_window_view(padded, SPEC_NFFT, axis=0)[centres]  # (rows, 4, 4, nfft)
    frames = (frames - np.nanmean(frames, axis=-1, keepdims=True)) * window
    # One-sided power density, scaled by 0.1 to match the range of Kaggle's files (median about 0.3).
    power = np.abs(np.fft.rfft(frames, axis=-1)[..., list(SPEC_BINS)]) ** 2 * 0.2 / (EEG_RATE * (window ** 2).sum())
    spectrum = power.mean(axis=2).reshape(rows, -1)  # average the four pairs of each region
    time = (centres / EEG_RATE).astype(np.float64)[:, None]
    return np.hstack([time, np.round(spectrum, 2)]).astype(np.float32)
