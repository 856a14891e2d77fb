"""`python -m hms.ensemble`: Optuna picks members and weights from finished CV runs' out-of-fold predictions.

    python -m hms.ensemble [--experiment NAME] [--runs ID ... | --filter MLFLOW_FILTER | --study A --study B --top K]
                           [--trials N] [--max-members K] [--blend prob|log] [--method auto|NAME] [--score-on all|hq]
                           [--seed S] [--tracking-uri URI] [--register NAME]

The library it calls is `hms.ensembling` (candidates, fit, MLflow record; the blend maths in
`hms.blending`). The result is an MLflow run (hms.run_type=ensemble) whose ensemble.json
`hms.predict` reads.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import logs
from .config import compose
from .blending import BLENDS
from .ensembling import EnsembleError, run_ensemble


def main(argv=None) -> int:
    """The `python -m hms.ensemble` command line."""
    logs.install()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small artifact is noise here
    parser = argparse.ArgumentParser(prog="python -m hms.ensemble", description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="hms", help="MLflow experiment holding the candidate runs")
    parser.add_argument("--runs", nargs="+", default=None, help="candidate CV run ids (default: every finished CV run)")
    parser.add_argument("--filter", default=None, help="MLflow filter on the experiment's CV runs, e.g. \"params.`input.mix` = 'both'\"")
    parser.add_argument("--study", action="append", default=None, help="a sweep study whose best --top finished runs are "
                        "candidates (repeat for several sweeps, e.g. a 2D and a 1D one)")
    parser.add_argument("--top", type=int, default=3, help="with --study: how many of each study's best runs")
    parser.add_argument("--score-on", choices=("all", "hq"), default=None, help="the rows weights are fitted and methods "
                        "compared on: all, or hq (>= 10 votes); default: the candidates' own cv.score_on")
    parser.add_argument("--trials", type=int, default=200, help="Optuna trials choosing members and weights")
    parser.add_argument("--max-members", type=int, default=None)
    parser.add_argument("--blend", choices=BLENDS, default="prob", help="prob: weighted mean; log: weighted geometric mean")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="auto", help="the blend method the ensemble uses: auto (the best nested KL), "
                        "optuna, greedy, best_single, equal, kl (KL-optimal weights), kl_ridge (pulled to equal), stack "
                        "(weights plus a per-class bias)")
    parser.add_argument("--tracking-uri", default=None, help="MLflow store (default: MLFLOW_TRACKING_URI, else the config's paths.tracking: sqlite:///./mlflow.db)")
    parser.add_argument("--register", default=None, metavar="NAME",
                        help="register the ensemble's model folder in MLflow's model registry under NAME (a new version)")
    args = parser.parse_args(argv)
    try:
        uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or compose().tracking.store
        run_ensemble(uri, args.experiment, args.runs, args.filter, args.trials, args.max_members, args.blend, args.seed,
                     register=args.register, method=args.method, studies=args.study, top=args.top, score_on=args.score_on)
    except EnsembleError as error:
        print(f"ensemble error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
