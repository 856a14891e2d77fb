"""The competition's score: KL divergence of predicted class probabilities from the vote distribution."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .constants import VOTE_COLUMNS

EPSILON = 1e-15


def kl_rows(y_true, y_pred) -> np.ndarray:
    """Per-row KL as Kaggle computes it: prediction clipped to [1e-15, 1-1e-15], terms where y > 0."""
    y = np.asarray(y_true, dtype=np.float64)
    q = np.clip(np.asarray(y_pred, dtype=np.float64), EPSILON, 1 - EPSILON)
    if y.shape != q.shape or y.ndim != 2:
        raise ValueError(f"y_true and y_pred must be (n, classes) arrays of one shape, got {y.shape} and {q.shape}")
    positive = y > 0
    terms = np.zeros_like(y)
    terms[positive] = y[positive] * np.log(y[positive] / q[positive])
    return terms.sum(axis=1)


def kl_divergence(y_true, y_pred) -> float:
    """The official score on (n, 6) arrays: mean over rows of the clipped, unrenormalised KL."""
    return float(kl_rows(y_true, y_pred).mean())


def kaggle_score(solution: pd.DataFrame, submission: pd.DataFrame, id_column: str = "eeg_id") -> float:
    """The official score on Kaggle-format frames (vote columns; solution votes are normalised per row)."""
    missing = [c for c in (id_column, *VOTE_COLUMNS) if c not in solution or c not in submission]
    if missing:
        raise ValueError(f"solution and submission both need columns {missing}")
    merged = solution[[id_column, *VOTE_COLUMNS]].merge(
        submission[[id_column, *VOTE_COLUMNS]], on=id_column, how="left", suffixes=("_y", "_p"), validate="one_to_one"
    )
    lacking = merged[[f"{c}_p" for c in VOTE_COLUMNS]].isna().any(axis=1)
    if lacking.any():
        raise ValueError(f"submission lacks {int(lacking.sum())} {id_column}s of the solution, e.g. {merged[id_column][lacking].iloc[0]}")
    y = merged[[f"{c}_y" for c in VOTE_COLUMNS]].to_numpy(np.float64)
    y = y / y.sum(axis=1, keepdims=True)
    return kl_divergence(y, merged[[f"{c}_p" for c in VOTE_COLUMNS]].to_numpy(np.float64))


def kl_loss(y_true, y_pred):
    """Keras loss: per-sample official KL, computed in float32 whatever the model's precision."""
    from keras import ops

    y = ops.cast(y_true, "float32")
    q = ops.clip(ops.cast(y_pred, "float32"), EPSILON, 1 - EPSILON)
    safe_y = ops.where(y > 0, y, ops.ones_like(y))
    terms = ops.where(y > 0, y * (ops.log(safe_y) - ops.log(q)), ops.zeros_like(y))
    return ops.sum(terms, axis=-1)


def kl_metric(name: str = "kl"):
    """Keras metric that averages `kl_loss` over an epoch, so it equals `kl_divergence` on the same rows."""
    import keras

    return keras.metrics.MeanMetricWrapper(kl_loss, name=name)
