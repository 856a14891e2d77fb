"""Baselines every CV run scores beside its network, on the same folds and rows.

- prior: each validation fold predicted with its training folds' mean vote distribution;
- baseline: a fast feature model fitted per fold, a multinomial (softmax) regression with L2 on
  time-pooled statistics of the cached tiles (raw-EEG runs: of each pair's band powers over 10 s
  segments), trained on the soft vote distributions.

A run whose network does not clearly beat the prior has not learned; one that does not beat the
feature model has not yet earned its training time.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from .features.pooling import pooled_features  # noqa: F401 - what the feature model fits on
from .metrics import kl_divergence

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)  # chosen per fold on an inner, patient-grouped split of the training folds
LEARNED_RATIO = 0.9  # a run has learned when cv_kl <= LEARNED_RATIO * prior_kl


def fold_prior(y: np.ndarray, train: np.ndarray, rows: int) -> np.ndarray:
    """The training rows' mean vote distribution, repeated for `rows` validation rows."""
    return np.tile(y[train].mean(axis=0), (rows, 1))


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_softmax(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 300) -> np.ndarray:
    """Weights (features + 1, classes) minimising the mean cross-entropy to the soft targets `y`
    (equal to the mean KL up to a constant) plus l2/2 * |W|^2 (the bias is not penalised)."""
    n, d = x.shape
    k = y.shape[1]
    xb = np.hstack([x, np.ones((n, 1))])

    def loss(theta):
        w = theta.reshape(d + 1, k)
        z = xb @ w
        z -= z.max(axis=1, keepdims=True)
        log_q = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        value = -(y * log_q).sum() / n + 0.5 * l2 * (w[:-1] ** 2).sum()
        grad = xb.T @ (np.exp(log_q) - y) / n
        grad[:-1] += l2 * w[:-1]
        return value, grad.ravel()

    result = minimize(loss, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x.reshape(d + 1, k)


def predict_softmax(weights: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Class probabilities of a `fit_softmax` model."""
    return _softmax(np.hstack([x, np.ones((len(x), 1))]) @ weights)


def _standardise(x_train: np.ndarray, *others: np.ndarray):
    mean, std = x_train.mean(axis=0), x_train.std(axis=0) + 1e-6
    return [(a - mean) / std for a in (x_train, *others)]


def feature_model(x: np.ndarray, y: np.ndarray, folds: np.ndarray, fold: int) -> np.ndarray:
    """Predictions for the rows of `fold` from a softmax regression fitted on the other folds only.

    The L2 strength is chosen on an inner split of the training rows (one training fold held out, so
    patients stay grouped); standardisation uses training rows only. Validation rows are never read
    except to be predicted."""
    train, val = folds != fold, folds == fold
    inner_folds = np.unique(folds[train])
    later = inner_folds[inner_folds > fold]
    held = later[0] if len(later) else inner_folds[0]  # the next training fold, cyclically
    fit_rows, check_rows = train & (folds != held), train & (folds == held)
    if fit_rows.any() and check_rows.any():
        x_fit, x_check = _standardise(x[fit_rows], x[check_rows])
        scores = [kl_divergence(y[check_rows], predict_softmax(fit_softmax(x_fit, y[fit_rows], l2), x_check)) for l2 in L2_GRID]
        l2 = L2_GRID[int(np.argmin(scores))]
    else:
        l2 = L2_GRID[len(L2_GRID) // 2]
    x_train, x_val = _standardise(x[train], x[val])
    return predict_softmax(fit_softmax(x_train, y[train], l2), x_val)


def fold_baselines(x: np.ndarray, y: np.ndarray, folds: np.ndarray, fold: int) -> dict[str, np.ndarray]:
    """Both baselines' predictions for the rows of `fold` (in row order), fitted on the other folds."""
    train, val = folds != fold, folds == fold
    return {"prior": fold_prior(y, train, int(val.sum())), "baseline": feature_model(x, y, folds, fold)}


def learned(cv_kl: float, prior_kl: float) -> bool:
    """Whether a run's network clearly beat the class prior on its own folds."""
    return bool(cv_kl <= LEARNED_RATIO * prior_kl)
