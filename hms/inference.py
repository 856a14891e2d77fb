"""Test-set inference from fold models: model folders (export, load), member predictions, the blended submission.

The library under `python -m hms.predict`. A model folder holds what predicts offline (Kaggle
notebooks have no internet and no MLflow server):

    DIR/ensemble.json              blend and members (run id, weight)
    DIR/<run id>/config.yaml       the member's resolved training config
    DIR/<run id>/fold<k>.weights.h5
    DIR/<bag id>/seed<s>-fold<k>.weights.h5   (a seed bag, cv.seeds: every seed's fold models, averaged)
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from . import logs
from .blending import BLENDS, BUNDLE_FILE, blend
from .config import planned_folds
from .constants import SUBMISSION_COLUMNS, VOTE_COLUMNS
from .dataset import load_test
from .inputs import bad_rows, build_features, data_root

log = logs.get(__name__)
FOLDER_MODEL = "hms-model-folder"  # model_type of a logged model that is a whole model folder (a registered ensemble)


class PredictError(Exception):
    """A model folder, run or test set that cannot be predicted; the message names the file or run."""


# --- model folders ---------------------------------------------------------------------------

def export(client, to, run_id: str | None = None, ensemble_id: str | None = None) -> Path:
    """Write a CV run's or an ensemble run's fold models, configs and weights into folder `to`."""
    to = Path(to)
    if ensemble_id:
        bundle = _download_json(client, ensemble_id, BUNDLE_FILE, "an ensemble run (hms.run_type=ensemble)")
        bundle = {"format": 1, "blend": bundle["blend"], "source": ensemble_id, **({"bias": bundle["bias"]} if "bias" in bundle else {}),
                  "members": [{"run_id": m["run_id"], "name": m.get("name"), "weight": m["weight"]} for m in bundle["members"]]}
    else:
        run = _get_run(client, run_id)
        if run.data.tags.get("hms.run_type") != "cv":
            raise PredictError(f"run {run_id} ({run.info.run_name}) is not a CV run (hms.run_type="
                               f"{run.data.tags.get('hms.run_type')}); use --ensemble for ensemble runs")
        bundle = {"format": 1, "blend": "prob", "source": run_id,
                  "members": [{"run_id": run_id, "name": run.info.run_name, "weight": 1.0}]}
    to.mkdir(parents=True, exist_ok=True)
    try:
        _export_members(client, to, bundle)
        return _write_bundle(to, bundle)
    except OSError as error:
        from .disk import is_full

        if not is_full(error):
            raise
        (to / BUNDLE_FILE).unlink(missing_ok=True)
        raise PredictError(f"{to}: no room for the model folder ({os.strerror(error.errno)} writing {error.filename}); "
                           f"{shutil.disk_usage(to).free:,} bytes are free there. Nothing in it is usable: ensemble.json "
                           "is written last, once every file is in place") from None


def _export_members(client, to: Path, bundle: dict) -> None:
    """Each member's config.yaml and fold files into `to/<member>/`, once there is room for them all."""
    plans = []
    for member in bundle["members"]:
        run = _get_run(client, member["run_id"])
        # A seed bag is one member: its config, and every seed run's fold models as seed<s>-fold<k>.weights.h5.
        parts = [(f"seed{s}-", r.info.run_id) for s, r in _bag_members(client, run)] if "hms.seeds" in run.data.tags \
            else [("", member["run_id"])]
        plans.append((member["run_id"], parts))
    _check_room(to, [(f"{source}/{f.path}", f.file_size or 0) for _, parts in plans for _, source in parts
                     for f in client.list_artifacts(source, "models")])
    for member_id, parts in plans:
        folder = to / member_id
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=to) as tmp:  # on the folder's filesystem: moved, not copied
            source = member_id
            try:
                shutil.move(client.download_artifacts(source, "config.yaml", tmp), folder / "config.yaml")
                for k, (prefix, source) in enumerate(parts):
                    (Path(tmp) / str(k)).mkdir()
                    models = client.download_artifacts(source, "models", str(Path(tmp) / str(k)))
                    for weights in sorted(Path(models).glob("fold*.weights.h5")):
                        shutil.move(weights, folder / f"{prefix}{weights.name}")
            except OSError:
                raise
            except Exception as error:  # noqa: BLE001 - reported with the run's id
                raise PredictError(f"run {source}: cannot fetch its config.yaml and models/ ({error})") from None


def _check_room(to: Path, files: list[tuple[str, int]]) -> None:
    """A model folder's files must fit: their bytes on the folder's filesystem, and each under this process's file-size
    limit (RLIMIT_FSIZE). MLflow's download hides a full disk behind 'Failed to download artifacts', so look first."""
    import resource

    needed, free = sum(size for _, size in files), shutil.disk_usage(to).free
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    over = [(name, size) for name, size in files if limit != resource.RLIM_INFINITY and size > limit]
    if needed > free or over:
        raise PredictError(f"{to}: no room for the model folder: it needs {needed:,} bytes, {free:,} are free there"
                           + (f"; {over[0][0]} ({over[0][1]:,} bytes) is over this process's file-size limit of {limit:,} "
                              "bytes" if over else "") + ". Nothing was written")


def _bag_members(client, run) -> list:
    """A finished seed bag's (seed, seed run) pairs, in the bag's seed order."""
    from .bag import BAG_TAG, SEED_TAG

    if run.info.status != "FINISHED":
        raise PredictError(f"run {run.info.run_id} ({run.info.run_name}) is a seed bag that has not finished "
                           f"(status {run.info.status}): finish it with resume={run.info.run_id}")
    found = client.search_runs([run.info.experiment_id], f"tags.`{BAG_TAG}` = '{run.info.run_id}' AND attributes.status = 'FINISHED'")
    by_seed = {r.data.tags[SEED_TAG]: r for r in sorted(found, key=lambda r: r.info.start_time)}
    seeds = run.data.tags["hms.seeds"].split(",")
    missing = [s for s in seeds if s not in by_seed]
    if missing:
        raise PredictError(f"seed bag {run.info.run_id}: no finished run for seed(s) {missing}")
    return [(s, by_seed[s]) for s in seeds]


def resolve_model_uri(client, uri: str):
    """The logged model behind `models:/<model id>`, `models:/<registered name>/<version>` or
    `models:/<registered name>@<alias>`."""
    from mlflow.exceptions import MlflowException

    if not str(uri).startswith("models:/"):
        raise PredictError(f"{uri}: not a models:/ URI (models:/<model id>, models:/<name>/<version> or models:/<name>@<alias>)")
    path = str(uri).removeprefix("models:/").strip("/")
    try:
        if "@" in path:
            version = client.get_model_version_by_alias(*path.rsplit("@", 1))
        elif "/" in path:
            version = client.get_model_version(*path.rsplit("/", 1))
        else:
            return client.get_logged_model(path)
        # MLflow's SQL registry keeps a version's source (models:/<id>, or the model's artifact folder) but may
        # leave its model_id empty.
        found = version.model_id or next(iter(re.findall(r"\bm-[0-9a-f]{32}\b", version.source or "")), None)
        if not found:
            raise PredictError(f"{uri}: registered version {version.version} of {version.name} is not a logged model "
                               f"(source {version.source})")
        return client.get_logged_model(found)
    except MlflowException as error:
        raise PredictError(f"{uri}: no such model ({error.message})") from None


def export_logged_models(client, to, uris) -> Path:
    """Write a model folder from models logged in MLflow (see `resolve_model_uri`). Fold models of one CV run make
    one member (weight 1), predicting with exactly the folds given; several CV runs are averaged. A registered
    model folder (`register_folder`, e.g. an ensemble) is the whole folder, given alone."""
    import mlflow.artifacts

    to = Path(to)
    members: dict[str, dict] = {}
    for uri in uris:
        logged = resolve_model_uri(client, uri)
        if logged.model_type == FOLDER_MODEL:
            if len(uris) != 1:
                raise PredictError(f"{uri} is a whole model folder ({logged.name}): predict with it alone")
            local = mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=str(to),
                                                        tracking_uri=client.tracking_uri)
            load_bundle(local)
            return Path(local)
        cv_run, fold = logged.tags.get("hms.cv_run"), logged.tags.get("hms.fold")
        if cv_run is None or fold is None:
            raise PredictError(f"{uri}: not an hms fold model (no hms.cv_run / hms.fold tags)")
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, dst_path=tmp,
                                                            tracking_uri=client.tracking_uri))
            folder = to / cv_run
            folder.mkdir(parents=True, exist_ok=True)
            shutil.copy(local / f"fold{fold}.weights.h5", folder / f"fold{fold}.weights.h5")
            member = members.setdefault(cv_run, {"config": OmegaConf.load(local / "config.yaml"), "folds": []})
        member["folds"].append(int(fold))
    if not members:
        raise PredictError("no models:/ URIs given")
    for cv_run, member in members.items():
        member["config"].cv.only = sorted(set(member["folds"]))  # predict with exactly the folds given
        OmegaConf.save(member["config"], to / cv_run / "config.yaml")
    bundle = {"format": 1, "blend": "prob", "source": " ".join(map(str, uris)),
              "members": [{"run_id": cv_run, "name": None, "weight": 1.0} for cv_run in members]}
    return _write_bundle(to, bundle)


def register_folder(client, folder, name: str, experiment_id: str, source_run_id: str) -> str:
    """Log a model folder (`export`) as one MLflow logged model and register it under `name` (a new version);
    returns the `models:/<name>/<version>` URI that `hms.predict --model-uri` takes."""
    from mlflow.exceptions import MlflowException

    from .tracking import log_model_folder

    bundle = load_bundle(folder)
    model_id = log_model_folder(client, experiment_id, folder, name=name, source_run_id=source_run_id, model_type=FOLDER_MODEL,
                                params={"blend": bundle["blend"], "members": str(len(bundle["members"]))},
                                tags={"hms.source": str(bundle.get("source"))})
    try:
        client.create_registered_model(name)
    except MlflowException as error:
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    with registry_sees(client):
        version = client.create_model_version(name, source=f"models:/{model_id}", run_id=source_run_id, model_id=model_id)
    return f"models:/{name}/{version.version}"


@contextlib.contextmanager
def registry_sees(client):
    """MLflow's SQL model registry looks a version's logged model up through the process-wide tracking URI,
    not the client's (a 'Logged model ... not found' error when they differ): point it at the client's store."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(client.tracking_uri):
        yield


def _write_bundle(to: Path, bundle: dict) -> Path:
    """Write a model folder's ensemble.json and check that the folder, as written, loads."""
    (to / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2))
    load_bundle(to)
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


def weight_files(cfg) -> list[str]:
    """The fold model files of a member with config `cfg`: fold<k>.weights.h5, or for a seed bag (cv.seeds)
    seed<s>-fold<k>.weights.h5 for every seed."""
    folds = [f"fold{k}.weights.h5" for k in planned_folds(cfg)]
    seeds = cfg.cv.get("seeds")
    return [f"seed{s}-{name}" for s in seeds for name in folds] if seeds else folds


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
    bias = bundle.get("bias")
    if bias is not None and not (isinstance(bias, list) and len(bias) == 6 and all(isinstance(b, (int, float)) and
                                                                                    np.isfinite(b) for b in bias)):
        raise PredictError(f"{path}: bias must be 6 finite numbers (one per class), got {bias!r}")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise PredictError(f"{path}: members must be a list of objects (run_id, weight)")
    for member in members:
        _inside(folder, member.get("run_id"), path)
        if "/" in member["run_id"]:
            raise PredictError(f"{path}: member id {member['run_id']!r} is not a plain name (letters, digits, _ and -): "
                               "a model folder cannot point outside itself")
        member_dir = folder / member["run_id"]
        config_path = _inside(folder, f"{member['run_id']}/config.yaml", path)
        if not config_path.is_file():
            raise PredictError(f"{config_path}: missing")
        member["config"] = _member_config(config_path)
        # Every fold the member trained must be there: a missing one is an error, never a smaller average.
        expected = [member_dir / name for name in weight_files(member["config"])]
        missing = [str(path) for path in expected if not path.is_file()]
        if missing:
            raise PredictError(f"{missing[0]}: missing ({len(missing)} of the member's {len(expected)} fold model files"
                               f"{': ' + ', '.join(Path(m).name for m in missing) if len(missing) > 1 else ''})")
        for weights in expected:
            _inside(folder, str(weights.relative_to(folder)), path)
        member["models"] = expected
        weight = member.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not (np.isfinite(weight) and weight >= 0):
            raise PredictError(f"{path}: member {member['run_id']} has weight {weight!r} (a finite number >= 0 expected)")
    return bundle


MEMBER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")


def _inside(folder: Path, name, bundle_path: Path) -> Path:
    """`folder / name`, for a model folder that may come from someone else: a member id is a plain name (an MLflow run
    id), and nothing the folder points to (no symbolic link) lies outside it."""
    if not isinstance(name, str):
        raise PredictError(f"{bundle_path}: a member's run_id must be a string, got {name!r}")
    member, _, rest = name.partition("/")
    if not MEMBER_ID.fullmatch(member) or ".." in rest.split("/"):
        raise PredictError(f"{bundle_path}: member id {member!r} is not a plain name (letters, digits, _ and -): "
                           "a model folder cannot point outside itself")
    path = folder / name
    root = folder.resolve()
    for part in [folder / member, path]:
        if part.is_symlink() or (part.exists() and not part.resolve().is_relative_to(root)):
            raise PredictError(f"{part}: a symbolic link (to {part.resolve()}); a model folder's files must be inside it")
    return path


MEMBER_KEYS = {"backbone.name": str, "backbone.source": str, "input.mix": str, "input.tile": list, "cv.folds": int}


def _member_config(path: Path):
    """A member's config.yaml, checked for what prediction reads: the backbone and input it names exist, folds and
    seeds are whole numbers. A YAML file only (read safely): nothing in it runs."""
    from .models import list_backbones
    from .representations.base import list_representations

    try:
        cfg = OmegaConf.load(path)
    except Exception as error:  # noqa: BLE001 - a damaged file is named
        raise PredictError(f"{path}: not a YAML config ({type(error).__name__}: {error})") from None
    if not isinstance(cfg, DictConfig):
        raise PredictError(f"{path}: not a config mapping")
    for key, kind in MEMBER_KEYS.items():
        value = OmegaConf.select(cfg, key, default=None)
        value = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PredictError(f"{path}: {key} must be a {kind.__name__}, got {value!r}")
    if cfg.input.mix not in list_representations():
        raise PredictError(f"{path}: input.mix={cfg.input.mix!r} is not a registered representation")
    if cfg.backbone.name not in list_backbones():
        raise PredictError(f"{path}: backbone.name={cfg.backbone.name!r} is not a registered backbone")
    if len(cfg.input.tile) != 2 or not all(isinstance(t, int) and 0 < t <= 4096 for t in cfg.input.tile):
        raise PredictError(f"{path}: input.tile must be two sizes in 1..4096, got {list(cfg.input.tile)}")
    for key in ("cv.only", "cv.seeds"):
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not (OmegaConf.is_list(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
            raise PredictError(f"{path}: {key} must be a list of whole numbers or null, got {value!r}")
    return cfg


# --- inference -------------------------------------------------------------------------------

def member_predictions(member, data_cfg: DictConfig, root, test: pd.DataFrame, batch_size: int = 64) -> np.ndarray:
    """One member's test predictions: its fold models' probabilities averaged, (len(test), 6)."""
    from .batches import TileBatches, predict_views
    from .devices import precision_policy
    from .representations import model_for, representation_for

    cfg = member["config"].copy()
    cfg.data = data_cfg
    representation = representation_for(cfg)
    caches = build_features(cfg, root, "test", test)
    bad = bad_rows(caches.values(), len(test))
    sources = [cache.features for cache in caches.values()]
    rows = np.flatnonzero(~bad)
    batches = TileBatches(sources, rows, np.zeros((len(rows), len(VOTE_COLUMNS)), np.float32), batch_size)
    out = np.full((len(test), len(VOTE_COLUMNS)), np.nan)
    folds = []
    with precision_policy("float32"):  # predictions in float32, whatever the members trained in
        model = model_for(cfg)  # its fold weights are loaded below
        for path in member["models"]:
            try:
                model.load_weights(path)
            except Exception as error:  # noqa: BLE001 - a damaged or mismatched file is named
                raise PredictError(f"{path}: cannot load into {cfg.backbone.name} on input.mix={cfg.input.mix}, tiles "
                                   f"{list(cfg.input.tile)} ({type(error).__name__}: {error})") from None
            predicted = predict_views(model, batches, representation.views())
            broken = ~np.isfinite(predicted).all(axis=1)
            if broken.any():  # a model's NaN is never passed off as a bad file's mean prediction
                raise PredictError(f"{path}: predicted non-finite probabilities for {int(broken.sum())} of {len(broken)} "
                                   f"test rows (eeg_id {test.eeg_id.to_numpy()[rows][broken][:5].tolist()}) under "
                                   f"{_backend()}")
            folds.append(predicted)
    out[rows] = np.mean(folds, axis=0)
    return out


def _backend() -> str:
    import keras

    return f"the {keras.backend.backend()} backend"


def predict(bundle: dict, cfg: DictConfig) -> pd.DataFrame:
    """The submission for the test set of `cfg.data`: members' fold-averaged predictions, blended."""
    root = data_root(cfg)
    test = load_test(root)
    predictions = np.stack([member_predictions(m, cfg.data, root, test) for m in bundle["members"]])
    missing = np.isnan(predictions).any(axis=(0, 2))
    predictions[:, missing] = 0  # filled below
    blended = blend(predictions, [m["weight"] for m in bundle["members"]], bundle["blend"], bundle.get("bias"))
    if missing.any():
        # data.bad_files=skip: rows whose files are bad get the mean prediction, so the submission stays complete.
        blended[missing] = blended[~missing].mean(axis=0) if (~missing).any() else 1 / len(VOTE_COLUMNS)
        log.warning(f"{int(missing.sum())} test eeg_id(s) with bad files got the mean prediction: "
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
