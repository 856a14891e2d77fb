"""`python -m hms.predict`: test-set inference in Kaggle's submission format from a CV run, an ensemble or a model folder.

    python -m hms.predict (--run ID | --ensemble ID | --models DIR | --model-uri models:/ID ...) [overrides] --out submission.csv
    python -m hms.predict export (--run ID | --ensemble ID) --to DIR [tracking.uri=...]

Overrides are Hydra's (`data=kaggle data.root=DIR`, `tracking.uri=...`); without them the test split
of the embedded synthetic dataset is predicted. Each member's fold models predict the test features
(built through the same cache code as training, with the member's tile kinds and size); folds are
averaged and members blended with the ensemble's weights. `export` writes a folder that predicts
offline with `--models DIR` (Kaggle notebooks have no internet and no MLflow server):

    DIR/ensemble.json              blend and members (run id, weight)
    DIR/<run id>/config.yaml       the member's resolved training config
    DIR/<run id>/fold<k>.weights.h5
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from . import answers, logs
from .backends import select
from .config import ConfigError, compose, validate
from .dataset import DataError
from .inference import PredictError, export, export_logged_models, load_bundle, predict
from .tracking import client_for


def main(argv=None) -> int:
    """The `python -m hms.predict` command line."""
    logs.install()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small artifact is noise here
    argv = list(sys.argv[1:] if argv is None else argv)
    exporting = bool(argv) and argv[0] == "export"
    parser = argparse.ArgumentParser(prog="python -m hms.predict" + (" export" if exporting else ""),
                                     description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a CV run id: its fold models (latest: the newest finished CV run)")
    source.add_argument("--ensemble", help="an ensemble run id (python -m hms.ensemble; latest: the newest)")
    if exporting:
        parser.add_argument("--to", required=True, help="folder to write the models into")
    else:
        source.add_argument("--models", help="a folder written by `python -m hms.predict export`")
        source.add_argument("--model-uri", nargs="+", help="models logged in MLflow: models:/<model id>, models:/<name>/<version> "
                            "or models:/<name>@<alias> (fold models, or one registered ensemble)")
        parser.add_argument("--out", default="submission.csv")
        parser.add_argument("--answers", help="a CSV answer key (eeg_id and the six vote columns) to score the submission "
                            "with the official metric; default: the embedded dataset's own key, where the data has one. "
                            "With --run or --ensemble the scores are logged to that run")
    args, overrides = parser.parse_known_args(argv[1:] if exporting else argv)
    if getattr(args, "model_uri", None):  # `--model-uri A B data=kaggle ...`: the overrides are not URIs
        overrides = [u for u in args.model_uri if "=" in u and not u.startswith("models:/")] + overrides
        args.model_uri = [u for u in args.model_uri if u not in overrides]
    unknown = [o for o in overrides if "=" not in o]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    try:
        cfg = compose(overrides)
        validate(cfg)
        select(cfg.trainer)  # the Keras backend the fold models predict on, before Keras is imported
        for kind in ("run", "ensemble"):
            if getattr(args, kind, None) == "latest":
                setattr(args, kind, latest_run(client_for(cfg.tracking), cfg.tracking.experiment, "cv" if kind == "run" else kind))
        if exporting:
            folder = export(client_for(cfg.tracking), args.to, args.run, args.ensemble)
            print(f"wrote {folder}: predict offline with python -m hms.predict --models {folder} ...")
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            if args.model_uri:
                folder = export_logged_models(client_for(cfg.tracking), Path(tmp) / "models", args.model_uri)
            else:
                folder = args.models or export(client_for(cfg.tracking), Path(tmp) / "models", args.run, args.ensemble)
            submission = predict(load_bundle(folder), cfg)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        submission.to_csv(args.out, index=False)
        print(f"wrote {args.out}: {len(submission)} rows")
        scored = score_test(cfg, submission, args.answers)
        if scored is not None:
            print(answers.line(scored))
            source = args.run or args.ensemble
            if source:
                client = client_for(cfg.tracking)
                for key, value in scored.items():
                    client.log_metric(source, key, value)
                print(f"logged {', '.join(sorted(scored))} to run {source}")
    except (PredictError, ConfigError, DataError, answers.AnswersError) as error:
        print(f"predict error: {error}", file=sys.stderr)
        return 2
    return 0


def latest_run(client, experiment: str, run_type: str) -> str:
    """The newest FINISHED run of `run_type` (cv or ensemble) in the experiment; a seed run of a bag is not one."""
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], f"tags.`hms.run_type` = '{run_type}' and attributes.status = 'FINISHED'",
                              order_by=["attributes.start_time DESC"], max_results=100) if found else []
    runs = [r for r in runs if "hms.bag" not in r.data.tags]  # a bag's seed runs start after the bag: the bag is the one
    if not runs:
        raise PredictError(f"no finished {run_type} run in experiment {experiment!r} of {client.tracking_uri}: "
                           f"give its id instead of latest")
    print(f"latest {run_type} run: {runs[0].info.run_id} ({runs[0].info.run_name})")
    return runs[0].info.run_id


def score_test(cfg, submission, path=None) -> dict | None:
    """The submission's test scores against the answer key at `path` (or the data's own, where it has one; else None),
    beside the class prior of the training labels."""
    from .dataset import load_train, targets
    from .inputs import data_root

    root = data_root(cfg)
    path = path or answers.default_answers(root)
    if path is None:
        return None
    key = answers.read_answers(path, submission.eeg_id)
    samples, _ = load_train(root)
    return answers.score(submission, key, targets(samples).mean(axis=0))


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
