"""Predictions worked out in the tests, one eeg_id at a time, without the training or prediction pipeline:
tiles computed straight from the data files, fold models loaded from their weights files, test-time views
written out here from HMS_DATA.md (time reversed; left and right chains swapped)."""

from __future__ import annotations

import numpy as np


def direct_tiles(root, split: str, item, tile, kinds, spectrogram_float16: bool = False) -> np.ndarray:
    """(H, W, 4 * kinds) tiles of one item (eeg_id, spectrogram_id, eeg_offset, spec_offset), from its files,
    stored at the cache's precision (float16). `spectrogram_float16`: as the per-file cache (data.cache=files)
    stores spectrograms, clipped to [exp(-4), exp(8)] and rounded to float16 before the tiles are made."""
    from hms.features.cache import _compute, _resize
    from hms.features.kaggle import kaggle_tiles
    from hms.dataset import read_spectrogram, spectrogram_path

    parts = []
    for kind in kinds:
        file_id, offset = (item.spectrogram_id, item.spec_offset) if kind == "kaggle" else (item.eeg_id, item.eeg_offset)
        if kind == "kaggle" and spectrogram_float16:
            values = read_spectrogram(spectrogram_path(root, int(file_id), split))
            values[:, 1:] = np.clip(values[:, 1:], np.exp(-4), np.exp(8)).astype(np.float16)
            parts.append(_resize(kaggle_tiles(values, float(offset))[None], tuple(tile))[0])
            continue
        parts.append(_compute(kind, str(root), split, int(file_id), np.array([float(offset)]), tuple(tile))[0])
    return np.concatenate(parts, axis=-1).astype(np.float16).astype(np.float32)


def swap_hemispheres(x: np.ndarray) -> np.ndarray:
    """Each kind's 4 channels are LL, RL, LP, RP: left and right swapped is RL, LL, RP, LP."""
    order = [c for k in range(x.shape[-1] // 4) for c in (4 * k + 1, 4 * k, 4 * k + 3, 4 * k + 2)]
    return x[..., order]


def all_views(x: np.ndarray) -> np.ndarray:
    """(4, H, W, C): the tiles, time reversed, hemispheres swapped, and both."""
    flipped = x[:, ::-1, :]
    return np.stack([x, flipped, swap_hemispheres(x), swap_hemispheres(flipped)])


def fold_model(cfg, kinds: int, weights_path):
    """A float32 fold model (the runs checked with it trained in float32) with its saved weights."""
    import keras

    from hms.representations import model_for

    keras.mixed_precision.set_global_policy("float32")
    model = model_for(cfg, kinds, None)
    model.load_weights(weights_path)
    return model


def view_predictions(model, x: np.ndarray) -> np.ndarray:
    """(n, 4, 6): the model's probabilities on each view of each item's tiles (x: (n, H, W, C)), from one call of
    the model (inference mode: no item's result depends on the others)."""
    views = np.concatenate([all_views(item) for item in x])
    return np.asarray(model(views, training=False), np.float64).reshape(len(x), 4, -1)
