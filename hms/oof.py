"""The out-of-fold contract: its columns, frames and scores, and the baselines every CV run scores beside them.

`oof.parquet` (a CV run's, or an ensemble's) has one row per eeg_id: eeg_id, fold, total_votes,
the vote distribution y_* and the predicted probabilities p_*. `cv_scores` turns such a frame into
the metrics every run logs; `RunBaselines` fits the class prior and the feature model
(`hms.baselines`) on the same folds and rows.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .baselines import LEARNED_RATIO, fold_baselines, pooled_features
from .dataset.samples import HQ_VOTES, PRED_COLUMNS, TARGET_COLUMNS, targets
from .metrics import kl_divergence

OOF_COLUMNS = ("eeg_id", "fold", "total_votes", *TARGET_COLUMNS, *PRED_COLUMNS)
BASELINE_KEYS = ("prior_kl", "baseline_kl")

__all__ = ["BASELINE_KEYS", "HQ_VOTES", "OOF_COLUMNS", "PRED_COLUMNS", "TARGET_COLUMNS", "RunBaselines", "cv_scores",
           "not_learned_warning", "oof_frame", "score_line"]


def oof_frame(samples: pd.DataFrame, rows: np.ndarray, predictions: np.ndarray) -> pd.DataFrame:
    """Out-of-fold rows in the contract's columns: `samples` rows `rows` with their `predictions`."""
    frame = samples.iloc[rows][["eeg_id", "fold", "total_votes", *TARGET_COLUMNS]].reset_index(drop=True)
    for i, column in enumerate(PRED_COLUMNS):
        frame[column] = predictions[:, i].astype(np.float64)
    return frame[list(OOF_COLUMNS)]


def cv_scores(oof: pd.DataFrame) -> dict[str, float]:
    """cv_kl over all out-of-fold rows, cv_kl_hq over rows with >= 10 votes, and each fold's KL."""
    y, p = oof[list(TARGET_COLUMNS)].to_numpy(), oof[list(PRED_COLUMNS)].to_numpy()
    scores = {"cv_kl": kl_divergence(y, p)}
    hq = oof.total_votes.to_numpy() >= HQ_VOTES
    if hq.any():
        scores["cv_kl_hq"] = kl_divergence(y[hq], p[hq])
    for fold, part in oof.groupby("fold"):
        scores[f"fold{fold}_kl"] = kl_divergence(part[list(TARGET_COLUMNS)].to_numpy(), part[list(PRED_COLUMNS)].to_numpy())
    folds = [v for k, v in scores.items() if k.startswith("fold")]
    if len(folds) >= 2:
        scores["cv_kl_std"] = float(np.std(folds, ddof=1))  # the spread of the fold KLs (sample standard deviation)
    return scores


class RunBaselines:
    """A run's baselines (hms.baselines), fitted fold by fold on the network's own folds and rows:
    `samples` (with their fold) and the cache rows (`fixed_rows` of `sources`) the network validates on;
    `features(sources, rows)`: what the feature model fits on (the representation's `baseline_features`)."""

    def __init__(self, samples: pd.DataFrame, sources, fixed_rows: np.ndarray, features=pooled_features):
        self.samples, self.sources, self.fixed_rows = samples, sources, fixed_rows
        self.pool = features
        self._features = None
        self._frames: dict[int, dict[str, pd.DataFrame]] = {}

    def fold(self, fold: int) -> dict[str, pd.DataFrame]:
        """{"prior": frame, "baseline": frame}: OOF-format predictions of each baseline for `fold`'s rows."""
        if fold not in self._frames:
            if self._features is None:  # pooled once per run, from the same cache rows the network validates on
                self._features = self.pool(self.sources, self.fixed_rows)
            folds = self.samples.fold.to_numpy()
            predictions = fold_baselines(self._features, targets(self.samples), folds, fold)
            rows = np.flatnonzero(folds == fold)
            self._frames[fold] = {name: oof_frame(self.samples, rows, p) for name, p in predictions.items()}
        return self._frames[fold]

    def scores(self, folds) -> dict[str, float]:
        """prior_kl, baseline_kl (and their _hq variants) over the rows of `folds`."""
        out = {}
        for name in ("prior", "baseline"):
            frame = pd.concat([self.fold(f)[name] for f in folds], ignore_index=True)
            out.update({key.replace("cv_kl", f"{name}_kl"): value for key, value in cv_scores(frame).items()
                        if key.startswith("cv_kl")})
        return out

    def frame(self, folds) -> pd.DataFrame:
        """eeg_id, fold and both baselines' predictions (prior_*, baseline_*) for the rows of `folds`."""
        parts = []
        for f in folds:
            frames = self.fold(f)
            part = frames["prior"][["eeg_id", "fold"]].copy()
            for name, frame in frames.items():
                for column in PRED_COLUMNS:
                    part[column.replace("p_", f"{name}_", 1)] = frame[column].to_numpy()
            parts.append(part)
        return pd.concat(parts, ignore_index=True).sort_values("eeg_id").reset_index(drop=True)


def score_line(scores: dict) -> str:
    """cv_kl beside the same run's baselines on one line (with the _hq variants where there are such rows)."""
    parts = [f"{key} {scores[key]:.4f}" for key in ("cv_kl", "prior_kl", "baseline_kl") if key in scores]
    hq = [f"{key}_hq {scores[key + '_hq']:.4f}" for key in ("cv_kl", "prior_kl", "baseline_kl") if key + "_hq" in scores]
    return "  ".join(parts) + ("   (>= 10 votes: " + "  ".join(hq) + ")" if hq else "")


def not_learned_warning(scores: dict) -> str:
    """The plain-words warning of a run whose network did not clearly beat the class prior."""
    return (f"WARNING: this run did not learn. Its cv_kl {scores['cv_kl']:.4f} is not clearly below the class prior's "
            f"prior_kl {scores['prior_kl']:.4f} (it needs <= {LEARNED_RATIO} x prior_kl = {LEARNED_RATIO * scores['prior_kl']:.4f}); "
            f"a feature model on the same folds reached baseline_kl {scores['baseline_kl']:.4f}. The run is tagged "
            "hms.learned=false. Try more epochs (trainer.epochs), a smaller batch (more steps per epoch), "
            "larger tiles (input.tile) or pretrained weights (backbone.weights).")
