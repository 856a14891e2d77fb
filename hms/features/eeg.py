"""EEG spectrograms by the seed's formula, computed for all 16 bipolar pairs at once.

The seed calls librosa once per pair: a 1024-point STFT of a 128-sample Hann window, then a mel
filterbank that keeps 0-20 Hz. Only the 128 windowed samples of each frame and the FFT bins below
20 Hz matter, so one (frames x 128) @ (128 x bins) product per pair kind gives the same power,
and one more product applies the mel filters.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..constants import CHAINS, EEG_COLUMNS, EEG_RATE, REGIONS

N_FFT = 1024
WIN_LENGTH = 128
N_MELS = 128
FMAX = 20
WIDTH = 256
TOP_DB = 80.0
AMIN = 1e-10
PAIRS = np.array([[EEG_COLUMNS.index(a), EEG_COLUMNS.index(b)] for r in REGIONS for a, b in CHAINS[r]])  # (16, 2)


@lru_cache(maxsize=1)
def _operators() -> tuple[np.ndarray, np.ndarray]:
    """(128, 2*bins) windowed cos/sin DFT matrix and (bins, 128) mel matrix, bins covering 0-20 Hz."""
    import librosa

    mel = librosa.filters.mel(sr=EEG_RATE, n_fft=N_FFT, n_mels=N_MELS, fmin=0, fmax=FMAX)  # (128, 513)
    bins = int(np.flatnonzero(mel.sum(axis=0)).max()) + 1
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WIN_LENGTH) / WIN_LENGTH)  # periodic Hann, as librosa's
    angle = 2 * np.pi * np.outer(np.arange(WIN_LENGTH), np.arange(bins)) / N_FFT
    dft = np.hstack([window[:, None] * np.cos(angle), window[:, None] * np.sin(angle)])
    return dft.astype(np.float64), mel[:, :bins].T.astype(np.float64)


def bipolar_pairs(window: np.ndarray) -> np.ndarray:
    """(batch, 16, samples) pair differences, NaN filled by each pair's mean (all-NaN pairs: zeros)."""
    x = window[..., PAIRS[:, 0]] - window[..., PAIRS[:, 1]]  # (batch, samples, 16)
    x = np.moveaxis(x, -2, -1).astype(np.float64)
    missing = np.isnan(x)
    if missing.any():
        count = (~missing).sum(axis=-1, keepdims=True)
        mean = np.where(missing, 0, x).sum(axis=-1, keepdims=True) / np.maximum(count, 1)
        x = np.where(missing, mean, x)
    return x


def eeg_spectrograms(windows: np.ndarray) -> np.ndarray:
    """(batch, 128, 256, 4) float32 from (batch, samples, 20) EEG windows; channels LL, RL, LP, RP."""
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.shape[-1] != len(EEG_COLUMNS):
        raise ValueError(f"expected (batch, samples, {len(EEG_COLUMNS)}) EEG windows, got {windows.shape}")
    dft, mel = _operators()
    x = bipolar_pairs(windows)  # (batch, 16, n)
    n = x.shape[-1]
    hop = n // WIDTH
    # Centred frames: frame t holds samples t*hop-64 .. t*hop+63, zeros beyond the signal (librosa's centre padding).
    padded = np.pad(x, ((0, 0), (0, 0), (WIN_LENGTH // 2, WIN_LENGTH // 2)))
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN_LENGTH, axis=-1)[:, :, : hop * WIDTH : hop]
    spectrum = frames @ dft  # (batch, 16, 256, 2*bins)
    bins = spectrum.shape[-1] // 2
    power = spectrum[..., :bins] ** 2 + spectrum[..., bins:] ** 2
    mels = power @ mel  # (batch, 16, 256, 128)
    db = 10 * np.log10(np.maximum(mels, AMIN))
    ref = 10 * np.log10(np.maximum(mels.max(axis=(-2, -1), keepdims=True), AMIN))
    db = np.maximum(db - ref, -TOP_DB)
    scaled = (db + 40) / 40
    batch = scaled.shape[0]
    tiles = scaled.reshape(batch, len(REGIONS), 4, WIDTH, N_MELS).mean(axis=2)  # average each chain's 4 pairs
    return np.ascontiguousarray(tiles.transpose(0, 3, 2, 1)).astype(np.float32)  # (batch, mels, time, region)


def eeg_spectrogram(window) -> np.ndarray:
    """(128, 256, 4) float32 of one 50 s EEG window ((10000, 20) array or frame); channels LL, RL, LP, RP."""
    return eeg_spectrograms(np.asarray(window, dtype=np.float32)[None])[0]
