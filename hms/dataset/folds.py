"""Patient-grouped K folds, stratified on the consensus class where the data allows."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd


def assign_folds(samples: pd.DataFrame, k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) of every sample; a patient's samples all share one fold; same seed, same folds."""
    patients = samples["patient_id"].to_numpy()
    n_patients = len(np.unique(patients))
    if k < 2:
        raise ValueError(f"cv.folds must be at least 2, got {k}")
    if n_patients < k:
        raise ValueError(f"cv.folds={k} needs at least {k} patients; the data has {n_patients}")
    from sklearn.model_selection import StratifiedGroupKFold  # imported here: scikit-learn is slow to import

    splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = np.empty(len(samples), dtype=np.int64)  # every sample is in exactly one held-out part
    with warnings.catch_warnings():
        # A class rarer than k samples cannot be spread over every fold: stratify as well as possible.
        warnings.simplefilter("ignore", UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(samples)), samples["consensus"].to_numpy(), patients)):
            folds[held_out] = fold
    return folds
