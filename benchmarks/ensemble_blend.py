"""Blending weights from out-of-fold predictions: Optuna vs a direct optimiser (scipy) vs greedy selection.

    python benchmarks/ensemble_blend.py [--tracking-uri sqlite:///mlflow.db] [--experiment hms]
                                        [--runs ID ...] [--filter F] [--trials 200] [--blend prob|log]

Reads the finished CV runs' oof.parquet (as `python -m hms.ensemble` does) and fits weights with
each method on all rows (in-sample KL) and fold by fold (nested KL: each fold blended with weights
fitted on the others). The seconds column times the fit on all rows only (one fit per method, the
same rows for every method); the nested fits are not timed. Optuna runs twice: cold (TPE from random starts) and warm
(seeded with the best single run and equal weights, as hms.ensemble does). Ratios are against scipy.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.blending import blend, evaluate, fit_best_single, fit_equal, fit_greedy, fit_optuna  # noqa: E402
from hms.ensembling import find_runs, load_candidates  # noqa: E402
from hms.metrics import kl_divergence  # noqa: E402
from hms.tracking import client_for  # noqa: E402


def fit_scipy(p, y, mode="prob", **_) -> np.ndarray:
    """Weights on the simplex by a direct optimiser (softmax parameters, L-BFGS): the benchmark's reference."""
    from scipy.optimize import minimize

    def loss(theta):
        w = np.exp(theta - theta.max())
        return kl_divergence(y, blend(p, w, mode))

    result = minimize(loss, np.zeros(len(p)), method="L-BFGS-B")
    w = np.exp(result.x - result.x.max())
    return w / w.sum()


def main():
    from omegaconf import OmegaConf

    parser = argparse.ArgumentParser()
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="hms")
    parser.add_argument("--runs", nargs="+", default=None)
    parser.add_argument("--filter", default=None)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--blend", default="prob", choices=("prob", "log"))
    args = parser.parse_args()
    client = client_for(OmegaConf.create({"uri": args.tracking_uri}))
    candidates = load_candidates(client, find_runs(client, args.experiment, args.runs, args.filter))
    p, y, folds = candidates.p, candidates.y, candidates.folds
    if len(p) < 2:
        sys.exit("need at least two finished CV runs over the same folds: train some with python -m hms.train")
    print(f"{len(p)} runs, {p.shape[1]} out-of-fold rows, {len(np.unique(folds))} folds, blend {args.blend}")
    for m in range(len(p)):
        print(f"  {candidates.label(m)}: KL {kl_divergence(y, p[m]):.4f}")
    methods = {
        "scipy L-BFGS (softmax weights)": (fit_scipy, {}),
        f"optuna TPE cold, {args.trials} trials": (fit_optuna, {"trials": args.trials, "warm_start": False}),
        f"optuna TPE warm, {args.trials} trials": (fit_optuna, {"trials": args.trials}),
        "greedy selection (Caruana)": (fit_greedy, {}),
        "best single run": (fit_best_single, {}),
        "equal weights": (fit_equal, {}),
    }
    results = evaluate(p, y, folds, args.blend, methods)
    rows = [(name, r.kl, r.nested_kl, r.seconds, int((r.weights > 0).sum())) for name, r in results.items()]
    reference = rows[0]
    print(f"\n{'method':36s} {'KL':>8s} {'nested':>8s} {'seconds':>8s} {'members':>7s}  KL - scipy  time / scipy")
    for name, kl, nested, seconds, members in rows:
        print(f"{name:36s} {kl:8.4f} {nested:8.4f} {seconds:8.2f} {members:7d}  {kl - reference[1]:+10.4f}  {seconds / reference[3]:10.1f}x")


if __name__ == "__main__":
    main()
