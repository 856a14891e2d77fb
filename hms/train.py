"""`python -m hms.train [overrides]`: one cross-validated experiment, recorded in MLflow."""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import hydra  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from . import tracking  # noqa: E402
from .baselines import learned as has_learned  # noqa: E402
from .config import ConfigError, validate  # noqa: E402
from .data import HQ_VOTES, PRED_COLUMNS, TARGET_COLUMNS, assign_folds, load_train, targets  # noqa: E402
from .metrics import kl_divergence  # noqa: E402
from .prepare import build_features, feature_kinds, prepare_data, train_items  # noqa: E402

OOF_COLUMNS = ("eeg_id", "fold", "total_votes", *TARGET_COLUMNS, *PRED_COLUMNS)


@dataclass
class TrainingData:
    """Samples with their folds, and for each the cache rows of its fixed window and of all its windows."""

    samples: pd.DataFrame
    sources: list
    fixed_rows: np.ndarray
    window_rows: list
    row_eeg_ids: np.ndarray  # the eeg_id of each cache row


def load_training_data(cfg: DictConfig) -> TrainingData:
    """Labels -> windows -> features: samples, folds and the memory-mapped tiles, bad files left out."""
    root = prepare_data(cfg)
    samples, windows = load_train(root)
    samples = samples.assign(fold=assign_folds(samples, cfg.cv.folds, cfg.seed))
    items = train_items(samples, windows, cfg.data.sampling)
    caches = build_features(cfg, root, "train", items)
    key = pd.MultiIndex.from_frame(items[["eeg_id", "eeg_offset", "spec_offset"]].astype({"eeg_id": "int64"}))
    position = pd.Series(np.arange(len(items)), index=key)
    fixed_rows = position.loc[list(zip(samples.eeg_id, samples.eeg_offset, samples.spec_offset))].to_numpy()
    bad = np.zeros(len(items), bool)
    for cache in caches.values():
        bad[cache.bad_items()] = True
    per_eeg = pd.Series(np.arange(len(items))[~bad]).groupby(items.eeg_id.to_numpy()[~bad]).agg(list)
    keep = ~bad[fixed_rows]
    if not keep.all():
        print(f"{int((~keep).sum())} sample(s) left out: their files are bad (data.bad_files=skip)")
    samples = samples[keep].reset_index(drop=True)
    fixed_rows = fixed_rows[keep]
    window_rows = [per_eeg.loc[e] for e in samples.eeg_id] if cfg.data.sampling == "random" else [[r] for r in fixed_rows]
    return TrainingData(samples, [caches[k].features for k in feature_kinds(cfg.input.mix)], fixed_rows, window_rows,
                        items.eeg_id.to_numpy(np.int64))


def fold_rows(data: TrainingData, batches: dict) -> pd.DataFrame:
    """eeg_id, patient_id, role: the eeg_ids each role's batches (train, valid, stage2) can draw windows from.

    Read from the batches themselves, so the record shows what a fold's model really saw."""
    patient = pd.Series(data.samples.patient_id.to_numpy(), index=data.samples.eeg_id.to_numpy())
    parts = []
    for role, b in batches.items():
        ids = np.unique(data.row_eeg_ids[np.concatenate(b.candidates)])
        parts.append(pd.DataFrame({"eeg_id": ids, "patient_id": patient.loc[ids].to_numpy(), "role": role}))
    return pd.concat(parts, ignore_index=True)


def _compile(model, lr: float):
    import keras

    from .metrics import kl_loss, kl_metric

    model.compile(optimizer=keras.optimizers.Adam(lr), loss=kl_loss, metrics=[kl_metric("kl")])


def _record_epoch_class():
    import keras
    from mlflow.entities import Metric

    class RecordEpoch(keras.callbacks.Callback):
        """Per-epoch loss, val_loss, val_kl and lr to the fold's child run, kept for the learning curves too."""

        def __init__(self, client, run_id: str, history: dict):
            super().__init__()
            self.client, self.run_id, self.history = client, run_id, history

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "val_loss", "val_kl")}
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            now = int(time.time() * 1000)
            self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in logs.items()])
            for k, v in logs.items():
                self.history.setdefault(k, []).append(v)

    return RecordEpoch


class FreshModel:
    """The run's compiled model, handed out at its initial weights and optimizer state for every fold,
    so that folds after the first skip building the model and tracing its training graph."""

    def __init__(self, cfg, devices, kinds: int, steps_per_epoch: int):
        import keras

        from .models import model_for
        from .schedule import lr_at

        keras.utils.set_random_seed(cfg.seed)
        with devices.strategy.scope():
            self.model = model_for(cfg, kinds, cfg.backbone.weights, steps_per_epoch=steps_per_epoch)
            _compile(self.model, lr_at(cfg.schedule, 0, cfg.trainer.epochs * steps_per_epoch))
            self.model.optimizer.build(self.model.trainable_variables)
        self.weights = self.model.get_weights()
        self.optimizer_state = [v.numpy() for v in self.model.optimizer.variables]

    def __call__(self):
        self.model.set_weights(self.weights)
        for variable, value in zip(self.model.optimizer.variables, self.optimizer_state):
            variable.assign(value)
        return self.model


def model_dtypes(model) -> str:
    """What the built model computes in, read from its layers: e.g. "compute float16, variables float32, output float32"."""
    def walk(layer):
        yield layer
        for inner in getattr(layer, "layers", ()):
            yield from walk(inner)

    compute = sorted({layer.compute_dtype for layer in walk(model) if layer.weights and layer is not model})
    variables = sorted({v.dtype for v in model.weights})
    output = model.outputs[0].dtype
    return f"compute {'/'.join(compute)}, variables {'/'.join(variables)}, output {output}"


def train_fold(cfg, devices, data: TrainingData, fold: int, fresh_model: FreshModel, client, run_id: str, history: dict):
    """Train one fold (and its optional second stage); returns the model and its validation predictions."""
    import keras

    from .augment import build_augmentation, tta_views
    from .batches import TileBatches, predict_views
    from .schedule import step_callback

    RecordEpoch = _record_epoch_class()
    keras.utils.set_random_seed(cfg.seed + fold)
    y = targets(data.samples).astype(np.float32)
    train_idx = np.flatnonzero(data.samples.fold.to_numpy() != fold)
    val_idx = np.flatnonzero(data.samples.fold.to_numpy() == fold)
    common = dict(batch_size=cfg.trainer.batch_size, workers=cfg.trainer.workers)
    augment = build_augmentation(cfg.augmentation, seed=cfg.seed + fold)
    train = TileBatches(data.sources, [data.window_rows[i] for i in train_idx], y[train_idx], augment=augment,
                        shuffle=True, seed=cfg.seed + fold, **common)
    val = TileBatches(data.sources, data.fixed_rows[val_idx], y[val_idx], **common)
    hq = train_idx[data.samples.total_votes.to_numpy()[train_idx] >= HQ_VOTES]
    stage2 = None
    if cfg.cv.stage2 and len(hq):
        stage2 = TileBatches(data.sources, [data.window_rows[i] for i in hq], y[hq], augment=augment, shuffle=True,
                             seed=cfg.seed + fold + 1000, **common)
    roles = {"train": train, "valid": val, **({"stage2": stage2} if stage2 is not None else {})}
    tracking.log_frame(client, run_id, fold_rows(data, roles), "fold_rows.parquet")  # once, before any training
    scale = devices.replicas if cfg.trainer.lr_scaling == "linear" else 1
    model = fresh_model()
    record = RecordEpoch(client, run_id, history)
    schedule = step_callback(cfg.schedule, cfg.trainer.epochs, len(train), scale)
    model.fit(train, validation_data=val, epochs=cfg.trainer.epochs, verbose=cfg.trainer.verbose, callbacks=[schedule, record])
    if stage2 is not None:
        # Second stage, as the top solutions: fine-tune on the windows most raters agreed to label.
        model.optimizer.learning_rate.assign(scale * cfg.cv.stage2_lr)
        model.fit(stage2, validation_data=val, initial_epoch=cfg.trainer.epochs, epochs=cfg.trainer.epochs + cfg.cv.stage2_epochs,
                  verbose=cfg.trainer.verbose, callbacks=[record])
    predictions = predict_views(model, val, tta_views(cfg.augmentation))
    return model, val_idx, predictions, val


def oof_frame(samples: pd.DataFrame, rows: np.ndarray, predictions: np.ndarray) -> pd.DataFrame:
    """Out-of-fold rows in the contract's columns."""
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
    return scores


class RunBaselines:
    """The run's baselines (hms.baselines), fitted fold by fold on the network's own folds and rows."""

    def __init__(self, data: TrainingData):
        self.data = data
        self._features = None
        self._frames: dict[int, dict[str, pd.DataFrame]] = {}

    def fold(self, fold: int) -> dict[str, pd.DataFrame]:
        """{"prior": frame, "baseline": frame}: OOF-format predictions of each baseline for `fold`'s rows."""
        from .baselines import fold_baselines, pooled_features

        if fold not in self._frames:
            if self._features is None:  # pooled once per run, from the same cache rows the network validates on
                self._features = pooled_features(self.data.sources, self.data.fixed_rows)
            folds = self.data.samples.fold.to_numpy()
            predictions = fold_baselines(self._features, targets(self.data.samples), folds, fold)
            rows = np.flatnonzero(folds == fold)
            self._frames[fold] = {name: oof_frame(self.data.samples, rows, p) for name, p in predictions.items()}
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


def _steps_per_epoch(cfg, samples: pd.DataFrame) -> int:
    """Optimiser steps in one epoch of a fold (the mean training fold's size over the global batch)."""
    return max(1, math.ceil(len(samples) * (cfg.cv.folds - 1) / cfg.cv.folds / cfg.trainer.batch_size))


def _finished_folds(client, parent_id: str) -> dict[int, pd.DataFrame]:
    """OOF rows of the folds a run already finished (its FINISHED child runs)."""
    from mlflow.entities import ViewType

    parent = client.get_run(parent_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'",
                                  run_view_type=ViewType.ALL)
    done = {}
    for child in children:
        fold = child.data.tags.get("hms.fold")
        if fold is None:
            continue
        if child.info.status == "FINISHED":
            done[int(fold)] = tracking.read_frame(client, child.info.run_id, "oof_fold.parquet")
        elif child.info.status == "RUNNING":  # its process died without saying so
            tracking.fail_run(client, child.info.run_id, RuntimeError("the process running this fold died"))
    return done


RESUME_FREE = ("resume", "tracking")  # what a resume command line may set: the rest is the run's own config


def _resumed_config(client, run_id: str, cfg: DictConfig, overrides=()) -> DictConfig:
    """The run's own config. A command-line override that asks for something else is an error, not ignored."""
    with tempfile.TemporaryDirectory() as tmp:
        stored = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
    changed = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key.split(".")[0] in RESUME_FREE or key.startswith("hydra"):
            continue
        asked, own = (OmegaConf.select(c, key) for c in (cfg, stored))
        as_plain = lambda v: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v  # noqa: E731
        if as_plain(asked) != as_plain(own):
            changed.append(f"{override} (the run has {key}={OmegaConf.to_yaml(own).strip() if OmegaConf.is_config(own) else own})")
    if changed:
        raise ConfigError(f"resume={run_id} continues the run with its own config; these overrides ask for something else: "
                          f"{'; '.join(changed)}. Drop them, or start a new run.")
    stored.resume = run_id
    stored.tracking = cfg.tracking
    return stored


def run_cv(cfg: DictConfig, tags: dict | None = None, on_fold=None, overrides=()) -> float:
    """Cross-validate the config: K folds in one MLflow parent run with one child run per fold.

    `tags` go on the parent run. `on_fold(fold, fold_kl, run_id)` is called as each fold finishes;
    if it returns True the run stops there (a sweep's pruner): it keeps its finished folds' records,
    is tagged `hms.pruned=true` and ended KILLED, and the KL over those folds is returned.
    `overrides` (the command line's) are checked against a resumed run's own config."""
    from . import plots
    from .devices import configure

    client = tracking.client_for(cfg.tracking)
    if cfg.resume:
        cfg = _resumed_config(client, cfg.resume, cfg, overrides)
        parent_id = cfg.resume
        experiment = client.get_run(parent_id).info.experiment_id
        done = _finished_folds(client, parent_id)
        client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "hms.resumed", "true")
    else:
        experiment = tracking.experiment_id(client, cfg.tracking.experiment)
        parent = client.create_run(experiment, run_name=f"{cfg.backbone.name}-{cfg.input.mix}-cv{cfg.cv.folds}",
                                   tags={"hms.run_type": "cv", **(tags or {})})
        parent_id = parent.info.run_id
        done = {}
    print(f"MLflow run {parent_id} (experiment {experiment}) at {tracking.tracking_uri(cfg.tracking)}")
    child_id = None
    try:
        if not cfg.resume:
            tracking.log_params(client, parent_id, tracking.flat_params(cfg))
            client.log_text(parent_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
        devices = configure(cfg.trainer)
        print(f"training on {devices.description}")
        data = load_training_data(cfg)
        folds = list(cfg.cv.only) if cfg.cv.only is not None else list(range(cfg.cv.folds))
        histories, parts, example, fresh_model, stopped = {}, [], None, None, False
        baselines = RunBaselines(data)
        for fold in folds:
            if fold in done:
                print(f"fold {fold}: finished earlier, kept")
                parts.append(done[fold])
                continue
            child = client.create_run(experiment, run_name=f"fold {fold}",
                                      tags={"mlflow.parentRunId": parent_id, "hms.fold": str(fold), "hms.run_type": "fold"})
            child_id = child.info.run_id
            history = histories.setdefault(fold, {})
            if fresh_model is None:
                fresh_model = FreshModel(cfg, devices, len(data.sources), _steps_per_epoch(cfg, data.samples))
                client.set_tag(parent_id, "hms.dtypes", model_dtypes(fresh_model.model))
            model, rows, predictions, val = train_fold(cfg, devices, data, fold, fresh_model, client, child_id, history)
            part = oof_frame(data.samples, rows, predictions)
            fold_kl = cv_scores(part)["cv_kl"]
            tracking.log_frame(client, child_id, part, "oof_fold.parquet")
            client.log_metric(child_id, "kl", fold_kl)
            fold_baselines = baselines.scores([fold])
            for key, value in fold_baselines.items():
                client.log_metric(child_id, key, value)
            with tempfile.TemporaryDirectory() as tmp:
                weights = Path(tmp) / f"fold{fold}.weights.h5"
                model.save_weights(weights)
                client.log_artifact(parent_id, str(weights), "models")
            client.log_metric(parent_id, f"fold{fold}_kl", fold_kl)
            client.set_terminated(child_id, "FINISHED")
            child_id = None
            print(f"fold {fold}: KL {fold_kl:.4f}  prior_kl {fold_baselines['prior_kl']:.4f}  "
                  f"baseline_kl {fold_baselines['baseline_kl']:.4f}")
            parts.append(part)
            if example is None:
                example = _montage_image(model, val)
            if on_fold is not None and on_fold(fold, fold_kl, parent_id):
                stopped = fold != folds[-1]
                if stopped:
                    print(f"stopped after fold {fold} (pruned)")
                    break
        oof = pd.concat(parts, ignore_index=True).sort_values("eeg_id").reset_index(drop=True)
        scores = cv_scores(oof)
        scores.update(baselines.scores(sorted(oof.fold.unique())))
        for key, value in scores.items():
            client.log_metric(parent_id, key, value)
        tracking.log_frame(client, parent_id, oof, "oof.parquet")
        tracking.log_frame(client, parent_id, baselines.frame(sorted(oof.fold.unique())), "baselines.parquet")
        learned = has_learned(scores["cv_kl"], scores["prior_kl"])
        client.set_tag(parent_id, "hms.learned", str(learned).lower())
        _log_plots(client, parent_id, histories, oof, example, plots)
        if stopped:
            client.set_tag(parent_id, "hms.pruned", "true")
        client.set_terminated(parent_id, "KILLED" if stopped else "FINISHED")
    except BaseException as error:
        if child_id is not None:
            tracking.fail_run(client, child_id, error)
        tracking.fail_run(client, parent_id, error)
        raise
    print(score_line(scores) + f"  over {len(oof)} out-of-fold rows")
    if not learned:
        print(not_learned_warning(scores), file=sys.stderr)
    print(f"view it: run `mlflow ui` in {Path.cwd()} and open {tracking.ui_address(cfg.tracking, experiment, parent_id)}")
    return scores["cv_kl"]


def score_line(scores: dict) -> str:
    """cv_kl beside the same run's baselines on one line (with the _hq variants where there are such rows)."""
    parts = [f"{key} {scores[key]:.4f}" for key in ("cv_kl", "prior_kl", "baseline_kl") if key in scores]
    hq = [f"{key}_hq {scores[key + '_hq']:.4f}" for key in ("cv_kl", "prior_kl", "baseline_kl") if key + "_hq" in scores]
    return "  ".join(parts) + ("   (>= 10 votes: " + "  ".join(hq) + ")" if hq else "")


def not_learned_warning(scores: dict) -> str:
    """The plain-words warning of a run whose network did not clearly beat the class prior."""
    from .baselines import LEARNED_RATIO

    return (f"WARNING: this run did not learn. Its cv_kl {scores['cv_kl']:.4f} is not clearly below the class prior's "
            f"prior_kl {scores['prior_kl']:.4f} (it needs <= {LEARNED_RATIO} x prior_kl = {LEARNED_RATIO * scores['prior_kl']:.4f}); "
            f"a feature model on the same folds reached baseline_kl {scores['baseline_kl']:.4f}. The run is tagged "
            "hms.learned=false. Try more epochs (trainer.epochs), a smaller batch (more steps per epoch), "
            "larger tiles (input.tile) or pretrained weights (backbone.weights).")


def _montage_image(model, val) -> np.ndarray:
    x, _ = val[0]
    return np.asarray(model.get_layer("montage")(x[:1]))[0]


def _log_plots(client, run_id, histories, oof, example, plots) -> None:
    y, p = oof[list(TARGET_COLUMNS)].to_numpy(), oof[list(PRED_COLUMNS)].to_numpy()
    figures = {"per_class_kl.png": plots.per_class_kl(y, p),
               "confusion_matrix.png": plots.confusion_matrix(y.argmax(axis=1), p.argmax(axis=1))}
    if histories:
        figures["learning_curves.png"] = plots.learning_curves(histories)
    if example is not None:
        figures["input_montage.png"] = plots.montage(example, "one validation input as the backbone sees it")
    with tempfile.TemporaryDirectory() as tmp:
        for name, figure in figures.items():
            plots.save(figure, Path(tmp) / name)
            client.log_artifact(run_id, str(Path(tmp) / name), "plots")


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float:
    """Compose, validate and run one cross-validated experiment; returns its CV KL."""
    try:
        validate(cfg)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    from hydra.core.hydra_config import HydraConfig

    try:
        return run_cv(cfg, overrides=list(HydraConfig.get().overrides.task))
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
