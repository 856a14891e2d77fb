"""Kaggle's spectrogram as the notebook's four 128 x 256 tiles."""

from __future__ import annotations

import numpy as np

from ..constants import REGIONS, SPEC_ROW_SECONDS, SPEC_WINDOW_ROWS

FREQ_PAD = 14  # 100 frequency bins padded to 128
TIME_CROP = 22  # 300 rows cropped to 256


def kaggle_tiles(frame, offset_seconds: float) -> np.ndarray:
    """(128, 256, 4) float32, channels LL, RL, LP, RP, from a spectrogram array (rows, 401) or frame.

    The 300-row window from `offset_seconds // 2`, each region transposed to frequency x time,
    clipped to [exp(-4), exp(8)], log, standardised per tile, NaN to 0, padded and cropped.
    A window that runs past the end of the file is padded with NaN (so 0 after standardising).
    """
    values = np.asarray(frame, dtype=np.float32)
    start = int(offset_seconds // SPEC_ROW_SECONDS)
    window = values[start:start + SPEC_WINDOW_ROWS, 1:]
    if len(window) < SPEC_WINDOW_ROWS:
        window = np.vstack([window, np.full((SPEC_WINDOW_ROWS - len(window), window.shape[1]), np.nan, np.float32)])
    regions = window.reshape(SPEC_WINDOW_ROWS, len(REGIONS), 100).transpose(1, 2, 0)  # (4, 100 freq, 300 time)
    logs = np.log(np.clip(regions, np.exp(-4), np.exp(8)))
    # Per-tile mean and standard deviation over the non-NaN cells; NaN cells (and all-NaN tiles) become 0.
    valid = ~np.isnan(logs)
    count = np.maximum(valid.sum(axis=(1, 2), keepdims=True), 1)
    centred = np.where(valid, logs, 0)
    centred -= centred.sum(axis=(1, 2), keepdims=True) / count
    centred *= valid
    std = np.sqrt(np.square(centred).sum(axis=(1, 2), keepdims=True) / count)
    tiles = centred / (std + 1e-6)
    out = np.zeros((len(REGIONS), 100 + 2 * FREQ_PAD, SPEC_WINDOW_ROWS - 2 * TIME_CROP), np.float32)
    out[:, FREQ_PAD:-FREQ_PAD] = tiles[:, :, TIME_CROP:-TIME_CROP]
    return out.transpose(1, 2, 0)
