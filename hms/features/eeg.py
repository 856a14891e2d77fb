"""EEG spectrograms by the notebook's formula, computed for all 16 bipolar pairs at once.

The notebook calls librosa once per pair: a 1024-point STFT of a 128-sample Hann window, then a mel
filterbank that keeps 0-20 Hz. Only the 128 windowed samples of each frame and the FFT bins below
20 Hz matter, so a product of all 16 pairs' frames with a small DFT matrix gives the same power.
"""

from __future__ import annotations

import threading
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
CHAIN_CHANNELS = tuple(EEG_COLUMNS[i] for i in sorted(set(PAIRS.ravel())))  # the 16 electrodes the chains use


def mel_filters() -> np.ndarray:
    """(128, 513) Slaney-normalised mel filterbank, 0-20 Hz, equal to librosa.filters.mel(sr=200,
    n_fft=1024, n_mels=128, fmin=0, fmax=20). Below 1 kHz the Slaney mel scale is linear in Hz, so
    the filter edges are evenly spaced frequencies."""
    edges = np.linspace(0, FMAX, N_MELS + 2)  # Hz; mel = 3 f / 200 here, linear
    fft_freqs = np.fft.rfftfreq(N_FFT, 1 / EEG_RATE)
    ramps = edges[:, None] - fft_freqs[None, :]
    widths = np.diff(edges)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@lru_cache(maxsize=1)
def _operators() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cos and sin DFT matrices over half a window, and the mel filters as (bin, weight) pairs.

    The periodic Hann window is symmetric about its sample 64 (sample 0 has weight 0), so with
    a[m] = x[64+m] + x[64-m] and b[m] = x[64+m] - x[64-m] the power of bin k is
    (sum_m w[64+m] cos(w_k m) a[m])^2 + (sum_m w[64+m] sin(w_k m) b[m])^2: half the products.
    Each of the 128 mel filters below 20 Hz covers at most two FFT bins: two gathers replace a product.
    """
    mel = mel_filters()  # (128, 513)
    bins = int(np.flatnonzero(mel.sum(axis=0)).max()) + 1
    half = WIN_LENGTH // 2
    m = np.arange(half)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * (half + m) / WIN_LENGTH)  # periodic Hann, as librosa's
    angle = 2 * np.pi * np.outer(m, np.arange(bins)) / N_FFT
    cos = window[:, None] * np.cos(angle)
    sin = (window[:, None] * np.sin(angle))[1:]
    nonzero = [np.flatnonzero(row) for row in mel[:, :bins]]
    if max(len(n) for n in nonzero) > 2:
        raise AssertionError("a mel filter covers more than two bins: the gather form no longer holds")
    first = np.array([n[0] for n in nonzero])
    second = np.array([n[-1] for n in nonzero])
    w_first = mel[np.arange(N_MELS), first]
    w_second = np.where(second != first, mel[np.arange(N_MELS), second], 0.0)
    return (cos.astype(np.float32), sin.astype(np.float32), first, second,
            np.stack([w_first, w_second]).astype(np.float32))


def bipolar_pairs(window: np.ndarray) -> np.ndarray:
    """(batch, 16, samples) pair differences, NaN filled by each pair's mean (all-NaN pairs: zeros)."""
    channels = np.moveaxis(np.asarray(window, dtype=np.float32), -1, -2)  # (batch, 20, samples)
    x = channels[:, PAIRS[:, 0]] - channels[:, PAIRS[:, 1]]
    missing = np.isnan(x)
    if missing.any():
        count = (~missing).sum(axis=-1, keepdims=True)
        mean = np.where(missing, 0, x).sum(axis=-1, keepdims=True, dtype=np.float64) / np.maximum(count, 1)
        x = np.where(missing, mean.astype(np.float32), x)
    return x


def eeg_spectrograms(windows: np.ndarray) -> np.ndarray:
    """(batch, 128, 256, 4) float32 from (batch, samples, 20) EEG windows; channels LL, RL, LP, RP."""
    windows = np.asarray(windows)
    if windows.ndim != 3 or windows.shape[-1] != len(EEG_COLUMNS):
        raise ValueError(f"expected (batch, samples, {len(EEG_COLUMNS)}) EEG windows, got {windows.shape}")
    return np.stack([_one(window) for window in windows])


class _Workspace(threading.local):
    """Per-thread buffers for one EEG: reused between calls, so no call pays for fresh pages of memory."""

    def get(self, name: str, shape: tuple, dtype=np.float32) -> np.ndarray:
        buffer = self.__dict__.get(name)
        if buffer is None or buffer.shape != shape:
            buffer = self.__dict__[name] = np.zeros(shape, dtype)
        return buffer


_workspace = _Workspace()


def _one(window: np.ndarray) -> np.ndarray:
    cos, sin, first, second, weights = _operators()
    half = WIN_LENGTH // 2
    n = window.shape[0]
    hop = n // WIDTH
    pairs = len(PAIRS)
    # Centred frames: frame t is centred on sample t*hop, zeros beyond the signal (librosa's centre padding).
    padded = _workspace.get("padded", (pairs, n + 2 * half))
    padded[:, half:half + n] = bipolar_pairs(window[None])[0]
    frames = np.lib.stride_tricks.sliding_window_view(padded, WIN_LENGTH + 1, axis=-1)[:, : hop * WIDTH : hop]
    after, before = frames[..., half:], frames[..., half::-1]  # x[64+m] and x[64-m], m = 0..64
    both = _workspace.get("both", (pairs, WIDTH, half))
    np.add(after[..., :half], before[..., :half], out=both)
    both[..., 0] = after[..., 0]  # m = 0 is the centre sample itself, not a pair of samples
    diff = _workspace.get("diff", (pairs, WIDTH, half - 1))
    np.subtract(after[..., 1:half], before[..., 1:half], out=diff)
    # Products laid out bins x frames, so that the mel filters below gather whole rows.
    power = np.matmul(cos.T, both.reshape(-1, half).T, out=_workspace.get("real", (cos.shape[1], pairs * WIDTH)))
    np.square(power, out=power)
    imag = np.matmul(sin.T, diff.reshape(-1, half - 1).T, out=_workspace.get("imag", (sin.shape[1], pairs * WIDTH)))
    power += np.square(imag, out=imag)
    mels = np.take(power, first, axis=0, out=_workspace.get("mels", (N_MELS, pairs * WIDTH)))
    mels *= weights[0][:, None]
    upper = np.take(power, second, axis=0, out=_workspace.get("upper", (N_MELS, pairs * WIDTH)))
    upper *= weights[1][:, None]
    mels += upper
    np.maximum(mels, AMIN, out=mels)
    db = np.log10(mels, out=mels).reshape(N_MELS, pairs, WIDTH)  # mel power in bels
    db -= db.max(axis=(0, 2), keepdims=True)  # ref=max per pair (log is monotone)
    np.maximum(db, -TOP_DB / 10, out=db)
    tiles = db.reshape(N_MELS, len(REGIONS), 4, WIDTH).mean(axis=2) * (10 / 40) + 1  # (dB + 40) / 40, 4 pairs averaged
    return np.ascontiguousarray(tiles.transpose(0, 2, 1), dtype=np.float32)  # (mels, time, region)


def eeg_spectrogram(window) -> np.ndarray:
    """(128, 256, 4) float32 of one 50 s EEG window ((10000, 20) array or frame); channels LL, RL, LP, RP."""
    return _one(np.asarray(window, dtype=np.float32))
