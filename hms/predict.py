"""`python -m hms.predict`: test-set inference in Kaggle's submission format from a CV run, an ensemble or a model folder.

    python -m hms.predict (--run ID | --ensemble ID | --models DIR) [overrides] --out submission.csv
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
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from .constants import SUBMISSION_COLUMNS, VOTE_COLUMNS
from .ensemble import BLENDS
from .ensemble import ENSEMBLE_FILE as BUNDLE_FILE  # the same file in an ensemble run and in a model folder


class PredictError(Exception):
    """A model folder, run or test set that cannot be predicted; the message names the file or run."""


# --- model folders ---------------------------------------------------------------------------

def export(client, to, run_id: str | None = None, ensemble_id: str | None = None) -> Path:
    """Write a CV run's or an ensemble run's fold models, configs and weights into folder `to`."""
    to = Path(to)
    if ensemble_id:
        bundle = _download_json(client, ensemble_id, BUNDLE_FILE, "an ensemble run (hms.run_type=ensemble)")
        bundle = {"format": 1, "blend": bundle["blend"], "source": ensemble_id,
                  "members": [{"run_id": m["run_id"], "name": m.get("name"), "weight": m["weight"]} for m in bundle["members"]]}
    else:
        run = _get_run(client, run_id)
        if run.data.tags.get("hms.run_type") != "cv":
            raise PredictError(f"run {run_id} ({run.info.run_name}) is not a CV run (hms.run_type="
                               f"{run.data.tags.get('hms.run_type')}); use --ensemble for ensemble runs")
        bundle = {"format": 1, "blend": "prob", "source": run_id,
                  "members": [{"run_id": run_id, "name": run.info.run_name, "weight": 1.0}]}
    to.mkdir(parents=True, exist_ok=True)
    for member in bundle["members"]:
        folder = to / member["run_id"]
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            try:
                config = client.download_artifacts(member["run_id"], "config.yaml", tmp)
                models = client.download_artifacts(member["run_id"], "models", tmp)
            except Exception as error:  # noqa: BLE001 - reported with the run's id
                raise PredictError(f"run {member['run_id']}: cannot fetch its config.yaml and models/ ({error})") from None
            shutil.copy(config, folder / "config.yaml")
            for weights in sorted(Path(models).glob("fold*.weights.h5")):
                shutil.copy(weights, folder / weights.name)
    (to / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2))
    load_bundle(to)  # what was written must load
    return to


def _get_run(client, run_id: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as error:
        raise PredictError(f"run {run_id}: not found in the tracking store ({error.message})") from None


def _download_json(client, run_id: str, name: str, what: str) -> dict:
    run = _get_run(client, run_id)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, name, tmp)
        except Exception:  # noqa: BLE001
            raise PredictError(f"run {run_id} ({run.info.run_name}) has no {name}: is it {what}?") from None
        return json.loads(Path(path).read_text())


def load_bundle(folder) -> dict:
    """Read and check a model folder: ensemble.json, and each member's config.yaml and fold weights."""
    folder = Path(folder)
    path = folder / BUNDLE_FILE
    if not path.is_file():
        raise PredictError(f"{path}: missing (write the folder with `python -m hms.predict export`)")
    try:
        bundle = json.loads(path.read_text())
        members = bundle["members"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise PredictError(f"{path}: not an hms model folder's ensemble.json ({type(error).__name__}: {error})") from None
    if not members:
        raise PredictError(f"{path}: no members")
    if bundle.get("blend") not in BLENDS:
        raise PredictError(f"{path}: blend must be one of {BLENDS}, got {bundle.get('blend')!r}")
    for member in members:
        member_dir = folder / member["run_id"]
        if not (member_dir / "config.yaml").is_file():
            raise PredictError(f"{member_dir / 'config.yaml'}: missing")
        member["config"] = OmegaConf.load(member_dir / "config.yaml")
        member["models"] = sorted(member_dir.glob("fold*.weights.h5"))
        if not member["models"]:
            raise PredictError(f"{member_dir}: no fold<k>.weights.h5 model files")
        if not float(member["weight"]) >= 0:
            raise PredictError(f"{path}: member {member['run_id']} has weight {member['weight']}")
    return bundle


# --- inference -------------------------------------------------------------------------------

def member_predictions(member, data_cfg: DictConfig, root, test: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """One member's test predictions: its fold models' probabilities averaged, (len(test), 6)."""
    import keras

    from .augment import tta_views
    from .batches import TileBatches, predict_views
    from .models import model_for
    from .prepare import build_features, feature_kinds

    cfg = member["config"].copy()
    cfg.data = data_cfg
    caches = build_features(cfg, root, "test", test)
    bad = np.zeros(len(test), bool)
    for cache in caches.values():
        bad[cache.bad_items()] = True
    sources = [caches[k].features for k in feature_kinds(cfg.input.mix)]
    rows = np.flatnonzero(~bad)
    batches = TileBatches(sources, rows, np.zeros((len(rows), len(VOTE_COLUMNS)), np.float32), batch_size)
    keras.mixed_precision.set_global_policy("float32")
    model = model_for(cfg, len(sources))  # its fold weights are loaded below
    out = np.full((len(test), len(VOTE_COLUMNS)), np.nan)
    folds = []
    for path in member["models"]:
        try:
            model.load_weights(path)
        except Exception as error:  # noqa: BLE001 - a damaged or mismatched file is named
            raise PredictError(f"{path}: cannot load into {cfg.backbone.name} on {cfg.input.mix} tiles "
                               f"{list(cfg.input.tile)} ({type(error).__name__}: {error})") from None
        folds.append(predict_views(model, batches, tta_views(cfg.augmentation)))
    out[rows] = np.mean(folds, axis=0)
    return out


def predict(bundle: dict, cfg: DictConfig) -> pd.DataFrame:
    """The submission for the test set of `cfg.data`: members' fold-averaged predictions, blended."""
    from .data import load_test
    from .ensemble import blend
    from .prepare import prepare_data

    root = prepare_data(cfg)
    test = load_test(root)
    predictions = np.stack([member_predictions(m, cfg.data, root, test) for m in bundle["members"]])
    missing = np.isnan(predictions).any(axis=(0, 2))
    predictions[:, missing] = 0  # filled below
    blended = blend(predictions, [m["weight"] for m in bundle["members"]], bundle["blend"])
    if missing.any():
        # data.bad_files=skip: rows whose files are bad get the mean prediction, so the submission stays complete.
        blended[missing] = blended[~missing].mean(axis=0) if (~missing).any() else 1 / len(VOTE_COLUMNS)
        print(f"{int(missing.sum())} test eeg_id(s) with bad files got the mean prediction: "
              f"{test.eeg_id[missing].tolist()[:10]}")
    blended = blended / blended.sum(axis=1, keepdims=True)
    submission = pd.DataFrame(blended, columns=list(VOTE_COLUMNS))
    submission.insert(0, "eeg_id", test.eeg_id.to_numpy())
    order = _submission_order(root, test)
    return submission.set_index("eeg_id").loc[order].reset_index()[list(SUBMISSION_COLUMNS)]


def _submission_order(root, test: pd.DataFrame) -> np.ndarray:
    """The eeg_id order of sample_submission.csv where the data has one, else test.csv's."""
    path = Path(root) / "sample_submission.csv"
    if not path.is_file():
        return test.eeg_id.to_numpy()
    order = pd.read_csv(path, usecols=["eeg_id"]).eeg_id.to_numpy()
    if set(order) != set(test.eeg_id):
        raise PredictError(f"{path}: its eeg_ids are not those of test.csv")
    return order


def main(argv=None) -> int:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small artifact is noise here
    """The `python -m hms.predict` command line."""
    from .config import ConfigError, compose, validate
    from .data import DataError
    from .tracking import client_for

    argv = list(sys.argv[1:] if argv is None else argv)
    exporting = bool(argv) and argv[0] == "export"
    parser = argparse.ArgumentParser(prog="python -m hms.predict" + (" export" if exporting else ""),
                                     description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--run", help="a CV run id: its fold models")
    source.add_argument("--ensemble", help="an ensemble run id (python -m hms.ensemble)")
    if exporting:
        parser.add_argument("--to", required=True, help="folder to write the models into")
    else:
        source.add_argument("--models", help="a folder written by `python -m hms.predict export`")
        parser.add_argument("--out", default="submission.csv")
    args, overrides = parser.parse_known_args(argv[1:] if exporting else argv)
    unknown = [o for o in overrides if "=" not in o]
    if unknown:
        parser.error(f"unrecognised arguments: {' '.join(unknown)}")
    try:
        cfg = compose(overrides)
        validate(cfg)
        if exporting:
            folder = export(client_for(cfg.tracking), args.to, args.run, args.ensemble)
            print(f"wrote {folder}: predict offline with python -m hms.predict --models {folder} ...")
            return 0
        with tempfile.TemporaryDirectory() as tmp:
            folder = args.models or export(client_for(cfg.tracking), Path(tmp) / "models", args.run, args.ensemble)
            submission = predict(load_bundle(folder), cfg)
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        submission.to_csv(args.out, index=False)
    except (PredictError, ConfigError, DataError) as error:
        print(f"predict error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(submission)} rows")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(main())
