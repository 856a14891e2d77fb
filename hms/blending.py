"""Blending out-of-fold predictions: the blend methods, weight fitting, nested evaluation, the bundle file.

Pure arrays in, arrays out: `p` is (runs, rows, 6) predicted probabilities, `y` the (rows, 6) vote
distributions. `hms.ensembling` feeds it candidate runs from MLflow; `hms.inference` blends test
predictions with the weights it found, read from the bundle file.
"""

from __future__ import annotations

import time
import contextlib
import warnings
from dataclasses import dataclass

import numpy as np

from .metrics import EPSILON, kl_divergence

BLENDS = ("prob", "log")
BUNDLE_FILE = "ensemble.json"  # an ensemble run's blend and members; the same file names a model folder's members


def blend(p: np.ndarray, weights, mode: str = "prob", bias=None) -> np.ndarray:
    """Blend (runs, rows, 6) predictions with non-negative weights: mean of probabilities, or normalised geometric mean.
    `bias` (6 numbers, a learned stack's) is added to the blend's log-probabilities before it is normalised again."""
    if isinstance(weights, Fit):
        weights, bias = weights.weights, weights.bias
    w = np.asarray(weights, np.float64)
    w = w / w.sum()
    used = w > 0
    if mode == "prob":
        out = np.tensordot(w[used], p[used], axes=1)
    elif mode == "log":
        out = np.exp(np.tensordot(w[used], np.log(np.clip(p[used], EPSILON, 1)), axes=1))
    else:
        raise ValueError(f"blend mode must be one of {BLENDS}, got {mode!r}")
    if bias is not None:
        out = np.clip(out, EPSILON, None) * np.exp(np.asarray(bias, np.float64) - np.max(bias))
    return out / out.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class Fit:
    """A learned stack's blend: member weights and a per-class bias on the blend's log-probabilities."""

    weights: np.ndarray
    bias: np.ndarray


def _softmax(theta: np.ndarray) -> np.ndarray:
    e = np.exp(theta - theta.max())
    return e / e.sum()


def _fit_simplex(p, y, mode, ridge: float = 0.0, with_bias: bool = False, bias_ridge: float = 0.0):
    """Weights on the simplex (a softmax of free parameters) and optionally a per-class bias, minimising the blend's
    KL (L-BFGS): `ridge` pulls the weights towards equal ones, `bias_ridge` the bias towards 0."""
    from scipy.optimize import minimize

    runs = len(p)
    equal = np.ones(runs) / runs

    def loss(theta):
        w = _softmax(theta[:runs])
        bias = theta[runs:] if with_bias else None
        value = kl_divergence(y, blend(p, w, mode, bias))
        value += ridge * float(np.sum((w - equal) ** 2))
        if with_bias:
            value += bias_ridge * float(np.sum(bias ** 2))
        return value

    start = np.zeros(runs + (6 if with_bias else 0))
    theta = minimize(loss, start, method="L-BFGS-B").x
    w = _softmax(theta[:runs])
    w[w < 1e-6] = 0.0
    w = w / w.sum()
    return Fit(w, theta[runs:].copy()) if with_bias else w


def fit_kl(p, y, mode="prob", **_) -> np.ndarray:
    """Non-negative weights summing to 1 that minimise the blend's KL on the rows (the KL counterpart of the 1st
    place's non-negative least squares)."""
    return _fit_simplex(p, y, mode)


def fit_kl_ridge(p, y, mode="prob", ridge: float = 0.05, **_) -> np.ndarray:
    """`fit_kl` pulled towards equal weights, for when fitted weights overfit the rows they were fitted on."""
    return _fit_simplex(p, y, mode, ridge=ridge)


def fit_stack(p, y, mode="prob", bias_ridge: float = 0.01, **_) -> Fit:
    """The 3rd place's learned blend: member weights plus a per-class bias on the log-probabilities."""
    return _fit_simplex(p, y, mode, with_bias=True, bias_ridge=bias_ridge)


def fit_best_single(p, y, mode="prob", **_) -> np.ndarray:
    """All weight on the run with the lowest KL."""
    w = np.zeros(len(p))
    w[int(np.argmin([kl_divergence(y, q) for q in p]))] = 1.0
    return w


def fit_equal(p, y=None, mode="prob", **_) -> np.ndarray:
    """The same weight for every run."""
    return np.ones(len(p)) / len(p)


def fit_greedy(p, y, mode="prob", steps: int = 50, max_members: int | None = None, **_) -> np.ndarray:
    """Forward selection with replacement (Caruana et al. 2004): add the run that lowers the blend's KL most, keep the best prefix."""
    counts = np.zeros(len(p))
    best_counts, best_kl = None, np.inf
    for _ in range(steps):
        allowed = np.arange(len(p)) if max_members is None or (counts > 0).sum() < max_members else np.flatnonzero(counts > 0)
        scores = [kl_divergence(y, blend(p, counts + np.eye(len(p))[i], mode)) for i in allowed]
        counts[allowed[int(np.argmin(scores))]] += 1
        if min(scores) < best_kl - 1e-12:
            best_kl, best_counts = min(scores), counts.copy()
    return best_counts / best_counts.sum()


def _trial_weights(trial, runs: int, max_members: int | None) -> np.ndarray:
    """One trial's proposal: which runs are in and their weights (the largest `max_members` kept)."""
    w = np.zeros(runs)
    for m in range(runs):
        if trial.suggest_categorical(f"use_{m}", [True, False]):
            w[m] = trial.suggest_float(f"w_{m}", 0.01, 1.0)
    if max_members is not None and (w > 0).sum() > max_members:
        w[np.argsort(-w)[max_members:]] = 0
    return w


def fit_optuna(p, y, mode="prob", trials: int = 200, max_members: int | None = None, seed: int = 0,
               warm_start: bool = True, study=None) -> np.ndarray:
    """Weights from an Optuna (TPE) study over run inclusion and weight; starts from the best single run and equal weights."""
    import optuna

    with quiet_optuna():
        return _fit_optuna(p, y, mode, trials, max_members, seed, warm_start, study)


@contextlib.contextmanager
def quiet_optuna():
    """Optuna at WARNING and its ExperimentalWarning (multivariate TPE) hidden inside the block; both restored after."""
    import optuna

    previous = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(previous)


def _fit_optuna(p, y, mode, trials, max_members, seed, warm_start, study) -> np.ndarray:
    import optuna

    study = study or optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=seed, multivariate=True))
    if warm_start:
        single = int(np.argmin([kl_divergence(y, q) for q in p]))
        study.enqueue_trial({**{f"use_{m}": m == single for m in range(len(p))}, f"w_{single}": 1.0})
        study.enqueue_trial({**{f"use_{m}": True for m in range(len(p))}, **{f"w_{m}": 1.0 for m in range(len(p))}})

    def objective(trial):
        w = _trial_weights(trial, len(p), max_members)
        if not w.any():
            raise optuna.TrialPruned("no run chosen")
        trial.set_user_attr("weights", (w / w.sum()).tolist())
        return kl_divergence(y, blend(p, w, mode))

    study.optimize(objective, n_trials=trials)
    return np.asarray(study.best_trial.user_attrs["weights"])


def methods(trials: int = 200, max_members: int | None = None, seed: int = 0) -> dict:
    """The fitting methods an ensemble run compares, each as (fit function, its options): Optuna first."""
    return {"optuna": (fit_optuna, {"trials": trials, "max_members": max_members, "seed": seed}),
            "greedy": (fit_greedy, {"max_members": max_members}),
            "best_single": (fit_best_single, {}),
            "equal": (fit_equal, {}),
            "kl": (fit_kl, {}),
            "kl_ridge": (fit_kl_ridge, {}),
            "stack": (fit_stack, {})}


def nested_predictions(fit, p, y, folds, mode="prob", **options) -> np.ndarray:
    """Each fold's rows blended with weights fitted on the other folds' rows: an honest estimate of a fitted blend."""
    out = np.empty(p.shape[1:])
    for fold in np.unique(folds):
        inside = folds != fold
        fitted = fit(p[:, inside], y[inside], mode, **options)
        out[~inside] = blend(p[:, ~inside], fitted, mode)
    return out


@dataclass(frozen=True)
class MethodResult:
    """One fitting method's weights (and per-class bias, a learned stack's), its in-sample KL, its nested KL and the
    seconds of the in-sample fit."""

    weights: np.ndarray
    kl: float
    nested_kl: float
    seconds: float
    bias: np.ndarray | None = None


def evaluate(p: np.ndarray, y: np.ndarray, folds: np.ndarray, mode: str, fits: dict) -> dict[str, MethodResult]:
    """Fit each of `fits` ({name: (fit, options)}) on all rows and fold by fold."""
    results = {}
    for name, (fit, options) in fits.items():
        start = time.perf_counter()
        fitted = fit(p, y, mode, **options)
        seconds = time.perf_counter() - start
        nested_kl = kl_divergence(y, nested_predictions(fit, p, y, folds, mode, **options))
        weights, bias = (fitted.weights, fitted.bias) if isinstance(fitted, Fit) else (np.asarray(fitted), None)
        results[name] = MethodResult(weights, kl_divergence(y, blend(p, fitted, mode)), nested_kl, seconds, bias)
    return results
