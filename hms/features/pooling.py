"""Pooled statistics of a window's arrays: what the fast feature baseline fits on (`hms.baselines`).

Tiles: per channel and frequency band, the mean and standard deviation over time. Raw-EEG signals: per pair and
band, the mean and standard deviation of the log band power over 10 s segments.
"""

from __future__ import annotations

import numpy as np

from ..constants import EEG_WINDOW_SECONDS

BANDS = 16  # frequency rows are averaged into at most this many bands before pooling over time


def pooled_features(sources, rows: np.ndarray, bands: int = BANDS, chunk: int = 256) -> np.ndarray:
    """(len(rows), 2 * bands * channels): per tile channel and frequency band, the mean and the
    standard deviation over time of the cached tiles at `rows` (read in chunks, in file order)."""
    rows = np.asarray(rows)
    blocks = []
    for source in sources:
        if len(source.shape) == 3:  # raw-EEG signals (n, samples, pairs)
            blocks.append(_signal_features(source, rows, bands, chunk))
            continue
        height = source.shape[1]
        groups = min(bands, height)
        bands_of = np.array_split(np.arange(height), groups)
        out = np.empty((len(rows), 2, groups, source.shape[3]), np.float32)
        for start in range(0, len(rows), chunk):
            part = rows[start:start + chunk]
            order = np.argsort(part)
            tiles = np.empty((len(part), *source.shape[1:]), np.float32)
            tiles[order] = source[part[order]]
            # (n, H, W, C) -> (n, groups, W, C): average the rows of each band (every row in one band, bands
            # of equal size or one row apart when the height is not a multiple), then pool over time.
            banded = np.stack([tiles[:, band].mean(axis=1) for band in bands_of], axis=1)
            out[start:start + len(part), 0] = banded.mean(axis=2)
            out[start:start + len(part), 1] = banded.std(axis=2)
        blocks.append(out.reshape(len(rows), -1))
    return np.concatenate(blocks, axis=1)


SEGMENTS = 5  # raw-EEG windows are cut into this many segments (10 s of a 50 s window) for band powers


def _signal_features(source, rows: np.ndarray, bands: int, chunk: int) -> np.ndarray:
    """(len(rows), 2 * bands * pairs): per pair and frequency band (log-spaced from 0.5 Hz to the Nyquist rate of a
    50 s window), the mean and standard deviation over 10 s segments of the log band power."""
    samples, pairs = source.shape[1], source.shape[2]
    length = samples // SEGMENTS
    rate = samples / EEG_WINDOW_SECONDS
    freqs = np.fft.rfftfreq(length, d=1 / rate)
    edges = np.geomspace(0.5, rate / 2, min(bands, 8) + 1)
    masks = [(freqs >= lo) & (freqs < hi) for lo, hi in zip(edges[:-1], edges[1:])]
    masks = [m if m.any() else (freqs >= lo) for m, lo in zip(masks, edges[:-1])]
    out = np.empty((len(rows), 2, len(masks), pairs), np.float32)
    for start in range(0, len(rows), chunk):
        part = rows[start:start + chunk]
        order = np.argsort(part)
        x = np.empty((len(part), samples, pairs), np.float32)
        x[order] = source[part[order]]
        segments = x[:, :SEGMENTS * length].reshape(len(part), SEGMENTS, length, pairs)
        power = np.abs(np.fft.rfft(segments, axis=2)) ** 2  # (n, segments, freqs, pairs)
        banded = np.log(np.stack([power[:, :, m].mean(axis=2) for m in masks], axis=2) + 1e-6)  # (n, segments, bands, pairs)
        out[start:start + len(part), 0] = banded.mean(axis=1)
        out[start:start + len(part), 1] = banded.std(axis=1)
    return out.reshape(len(rows), -1)
