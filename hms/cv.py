"""Cross-validation of one config: K folds in one MLflow parent run with one child run per fold.

The steps are separate functions: `open_parent` (a new run, or a resumed one with its finished
folds), `FreshModel` (one compiled model reset for every fold), `train_fold` (fit and predict one
validation fold), `record_fold` (its OOF rows, metrics and weights), `finish_parent` (scores beside
the baselines, OOF file, plots, hms.learned). `run_cv` strings them together; `hms.train` and
`hms.search` call it.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from . import disk, logs, tracking
from .baselines import learned as has_learned
from .config import ConfigError, fold_seed, planned_folds
from .dataset import HQ_VOTES, PRED_COLUMNS, TARGET_COLUMNS, targets
from .inputs import TrainingData, load_training_data
from .oof import RunBaselines, cv_scores, not_learned_warning, oof_frame, score_line

log = logs.get(__name__)


def fold_rows(data: TrainingData, batches: dict) -> pd.DataFrame:
    """eeg_id, patient_id, role, weight: the eeg_ids each role's batches (train, valid, stage2) can draw windows from,
    and the weight of each in the loss (cv.sample_weight; 1 where the batches are unweighted).

    Read from the batches themselves, so the record shows what a fold's model really saw."""
    patient = pd.Series(data.samples.patient_id.to_numpy(), index=data.samples.eeg_id.to_numpy())
    parts = []
    for role, b in batches.items():
        sample_ids = np.array([data.row_eeg_ids[c[0]] for c in b.candidates])  # one eeg_id per sample
        weights = np.ones(len(sample_ids)) if b.weights is None else b.weights.astype(np.float64)
        frame = pd.DataFrame({"eeg_id": sample_ids, "weight": weights}).drop_duplicates("eeg_id").sort_values("eeg_id")
        parts.append(pd.DataFrame({"eeg_id": frame.eeg_id.to_numpy(), "patient_id": patient.loc[frame.eeg_id].to_numpy(),
                                   "role": role, "weight": frame.weight.to_numpy()}))
    return pd.concat(parts, ignore_index=True)


def _compile(model, lr: float, eager: bool = False):
    from .devices import optimizer_for
    from .metrics import kl_loss, kl_metric
    model.compile(optimizer=optimizer_for(model, lr), loss=kl_loss, metrics=[kl_metric("kl")], run_eagerly=eager)


# Training steps in one process below which `trainer.eager=auto` runs them eagerly. Tracing the training and
# prediction graphs costs about what the extra Python of 14-16 eager steps costs, for the 1D CNN, B0 and B2 alike
# (both grow with the model's op count: benchmarks/eager.py); a run also validates and predicts, which adds eager
# calls beyond its training steps, hence a little below that.
EAGER_STEPS = 12


def eager_for(cfg, devices, steps_per_epoch: int) -> bool:
    """Whether a run's model runs its steps eagerly: `trainer.eager`, where auto means yes for a run whose training
    steps in this process (folds x epochs x steps per epoch) are fewer than `EAGER_STEPS`, on TensorFlow with one
    replica (a traced step is what spreads a batch over replicas well, and under JAX an eager step is op by op)."""
    import keras

    choice = cfg.trainer.get("eager", False)  # runs logged before the key traced
    if choice != "auto":
        return bool(choice)
    if keras.backend.backend() != "tensorflow" or devices.replicas > 1:
        return False
    epochs = cfg.trainer.epochs + (cfg.cv.stage2_epochs if cfg.cv.stage2 else 0)
    return len(planned_folds(cfg)) * epochs * steps_per_epoch < EAGER_STEPS


def _record_epoch_class():
    import keras
    from mlflow.entities import Metric

    class RecordEpoch(keras.callbacks.Callback):
        """Per-epoch loss, val_loss, val_kl and lr to the fold's child run, kept for the learning curves too."""

        def __init__(self, client, run_id: str, history: dict, fold: int | None = None):
            super().__init__()
            self.client, self.run_id, self.history, self.fold = client, run_id, history, fold
            self.started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            tracking.raise_if_preempted()  # a SIGTERM whose own raise was dropped (see there)

        def on_epoch_end(self, epoch, logs=None):
            logs = {k: float(v) for k, v in (logs or {}).items() if k in ("loss", "val_loss", "val_kl")}
            logs["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            now = int(time.time() * 1000)
            try:
                self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, epoch) for k, v in logs.items()])
            except Exception as error:  # noqa: BLE001 - the store is away: training goes on, the curves stay in memory
                if not tracking.unreachable(error):
                    raise
                log.warning(f"fold {self.fold} epoch {epoch + 1}: the tracking store did not answer ({tracking.retry_bound()}); "
                            "training goes on, and the fold's records wait in the spool until they can be recorded")
            for k, v in logs.items():
                self.history.setdefault(k, []).append(v)
            # The run's log file keeps one line per epoch whatever the console shows (Keras' bar, or nothing).
            log.debug("fold %s epoch %d: %s (%.1f s)", self.fold, epoch + 1, "  ".join(f"{k} {v:.4g}" for k, v in logs.items()),
                      time.perf_counter() - self.started)
            self.started = time.perf_counter()

    return RecordEpoch


class FreshModel:
    """The run's compiled model, handed out for every fold at its initial weights, optimizer state and random
    state, so that folds after the first skip building the model and tracing its training graph, and a
    fold trains the same whether or not other folds ran before it in the process (a resumed run, `cv.only`)."""

    def __init__(self, cfg, devices, steps_per_epoch: int):
        import keras

        from .representations import model_for
        from .schedule import lr_at

        keras.utils.set_random_seed(cfg.seed)  # once: it also clears TensorFlow's kernel cache (see `seed_fold`)
        with devices.strategy.scope():
            self.model = model_for(cfg, weights=cfg.backbone.weights, steps_per_epoch=steps_per_epoch)
            if cfg.backbone.get("init", "backend") == "portable" and not cfg.backbone.weights:  # (runs logged before the key: backend)
                from .models.initial import portable_weights

                drawn = portable_weights(self.model, cfg.seed)
                if drawn["unknown"]:
                    log.warning(f"backbone.init=portable: {len(drawn['unknown'])} weight(s) keep the backend's own initial "
                                f"draw (an initializer hms does not know), e.g. {drawn['unknown'][0]}")
            _compile(self.model, lr_at(cfg.schedule, 0, cfg.trainer.epochs * steps_per_epoch),
                     eager=eager_for(cfg, devices, steps_per_epoch))
            self.model.optimizer.build(self.model.trainable_variables)
        # `variables`: the weights and the layers' random seed states (dropout, stochastic depth).
        self.variables = [keras.ops.convert_to_numpy(v) for v in self.model.variables]
        self.optimizer_state = [keras.ops.convert_to_numpy(v) for v in self.model.optimizer.variables]
        self.seed = cfg.seed

    def __call__(self, fold: int = 0):
        for variable, value in zip(self.model.variables, self.variables):
            if "seed_generator" in variable.path:  # [seed, counter]: each fold its own stream of random draws
                value = (value + np.array([fold, 0], value.dtype))
            variable.assign(value)
        for variable, value in zip(self.model.optimizer.variables, self.optimizer_state):
            variable.assign(value)
        seed_fold(self.seed + fold)
        return self.model


def seed_fold(seed: int) -> None:
    """Python's and NumPy's global random state for one fold. Not `keras.utils.set_random_seed`: its
    `tf.random.set_seed` clears TensorFlow's kernel cache, so every fold's first step would instantiate and
    optimise the training graph again (about 10 s for B2 on a 2-core CPU). The model's own random ops draw
    from its seed generators, which `FreshModel` resets per fold."""
    import random

    random.seed(seed)
    np.random.seed(seed)


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


def progress_verbosity(setting, stream=None) -> int:
    """Keras' `verbose` for `trainer.verbose`: auto is the animated bar (1) on a terminal and one line per epoch (2)
    when output goes to a file or a pipe, where every redraw of a bar would be written out."""
    if setting != "auto":
        return int(setting)
    stream = stream or sys.stdout
    return 1 if hasattr(stream, "isatty") and stream.isatty() else 2


def vote_weights(votes: np.ndarray, cap: int) -> np.ndarray | None:
    """`cv.sample_weight`: each training row weighs min(votes, cap), scaled so that the rows' weights average 1
    (the loss keeps its scale, so the learning rate means what it meant). None where cap is 0 (off)."""
    if not cap:
        return None
    weights = np.minimum(np.asarray(votes, np.float64), cap)
    return (weights / weights.mean()).astype(np.float32)


def train_fold(cfg, devices, data: TrainingData, fold: int, fresh_model: FreshModel, client, run_id: str, history: dict):
    """Train one fold (and its optional second stage); returns the model and its validation predictions."""
    from .batches import TileBatches, predict_views
    from .representations import representation_for
    from .schedule import step_callback

    RecordEpoch = _record_epoch_class()
    y = targets(data.samples).astype(np.float32)
    train_idx = np.flatnonzero(data.samples.fold.to_numpy() != fold)
    val_idx = np.flatnonzero(data.samples.fold.to_numpy() == fold)
    common = dict(batch_size=cfg.trainer.batch_size, workers=cfg.trainer.workers, multiple=devices.batch_multiple,
                  shard=devices.process)
    representation = representation_for(cfg)
    augment = representation.augmentation(seed=cfg.seed + fold)
    mixup = cfg.augmentation.get("mixup", 0.0)
    weights = vote_weights(data.samples.total_votes.to_numpy()[train_idx], cfg.cv.get("sample_weight", 0))
    train = TileBatches(data.sources, [data.window_rows[i] for i in train_idx], y[train_idx], augment=augment,
                        shuffle=True, seed=cfg.seed + fold, mixup=mixup, weights=weights, **common)
    val = TileBatches(data.sources, data.fixed_rows[val_idx], y[val_idx], **common)
    hq = train_idx[data.samples.total_votes.to_numpy()[train_idx] >= HQ_VOTES]
    stage2 = None
    if cfg.cv.stage2 and len(hq):
        stage2 = TileBatches(data.sources, [data.window_rows[i] for i in hq], y[hq], augment=augment, shuffle=True,
                             seed=cfg.seed + fold + 1000, mixup=mixup, **common)
    roles = {"train": train, "valid": val, **({"stage2": stage2} if stage2 is not None else {})}
    tracking.log_frame(client, run_id, fold_rows(data, roles), "fold_rows.parquet")  # once, before any training
    scale = devices.replicas if cfg.trainer.lr_scaling == "linear" else 1
    model = fresh_model(fold)
    record = RecordEpoch(client, run_id, history, fold)
    schedule = step_callback(cfg.schedule, cfg.trainer.epochs, len(train), scale)
    verbose = progress_verbosity(cfg.trainer.verbose)
    model.fit(train, validation_data=val, epochs=cfg.trainer.epochs, verbose=verbose, callbacks=[schedule, record])
    if stage2 is not None:
        # Second stage, as the top solutions: fine-tune on the windows most raters agreed to label.
        model.optimizer.learning_rate.assign(scale * cfg.cv.stage2_lr)
        model.fit(stage2, validation_data=val, initial_epoch=cfg.trainer.epochs, epochs=cfg.trainer.epochs + cfg.cv.stage2_epochs,
                  verbose=verbose, callbacks=[record])
    with _local(devices) as local:  # spread over processes: every process goes on with its own copy of the weights
        if local:
            model = _local_copy(cfg, model)
            val = TileBatches(data.sources, data.fixed_rows[val_idx], y[val_idx], batch_size=cfg.trainer.batch_size,
                              workers=cfg.trainer.workers)
        if cfg.trainer.get("bn_recalibrate", False):  # (runs logged before the key did not) batch-norm statistics of the final weights, over the training rows
            from .models import recalibrate_batch_norm

            # Batches 4x the training batch: the same average, a quarter of the (eager, per-call) passes.
            recalibrate_batch_norm(model, TileBatches(data.sources, data.fixed_rows[train_idx], y[train_idx],
                                                      batch_size=4 * cfg.trainer.batch_size, workers=cfg.trainer.workers,
                                                      multiple=1 if local else devices.batch_multiple))
        predictions = predict_views(model, val, representation.views())
    return model, val_idx, predictions, val


@contextmanager
def _local(devices):
    """Inside: no distribution, where the run is spread over several processes (True); else nothing changes (False).
    Their predictions would be arrays no one process holds whole."""
    if devices.process[1] <= 1:
        yield False
        return
    import keras

    previous = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield True
    finally:
        keras.distribution.set_distribution(previous)


def _local_copy(cfg, model):
    """The trained model's weights (replicated on every device of every process) in a model of this process alone."""
    from .representations import model_for

    weights = [np.asarray(w) for w in model.get_weights()]
    local = model_for(cfg)
    local.set_weights(weights)
    return local


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


# What a resume command line may set (the rest is the run's own config): where it records, and its fold workers.
RESUME_FREE = ("resume", "tracking", "cv.workers", "cv.queue", "cv.heartbeat")


def resumed_config(client, run_id: str, cfg: DictConfig, overrides=(), free=None) -> DictConfig:
    """The run's own config. A command-line override that asks for something else is an error, not ignored."""
    with tempfile.TemporaryDirectory() as tmp:
        stored = OmegaConf.load(client.download_artifacts(run_id, "config.yaml", tmp))
    changed = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if any(key == f or key.startswith(f + ".") for f in free or RESUME_FREE) or key.startswith("hydra"):
            continue
        asked, own = (OmegaConf.select(c, key) for c in (cfg, stored))
        as_plain = lambda v: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v  # noqa: E731
        if as_plain(asked) != as_plain(own):
            changed.append(f"{override} (the run has {key}={OmegaConf.to_yaml(own).strip() if OmegaConf.is_config(own) else own})")
    if changed:
        raise ConfigError(f"resume={run_id} continues the run with its own config; these overrides ask for something else: "
                          f"{'; '.join(changed)}. Drop them, or start a new run.")
    for override in overrides:  # what the command may set, it sets
        key = override.split("=", 1)[0].lstrip("+~")
        if key not in ("resume", "join") and not key.startswith(("tracking", "hydra")):
            OmegaConf.update(stored, key, OmegaConf.select(cfg, key), merge=False)
    stored.resume = run_id
    stored.tracking = cfg.tracking
    return stored


@dataclass
class Parent:
    """The parent run a CV run records into, and the folds it already finished (on resume)."""

    run_id: str
    experiment: str
    cfg: DictConfig
    done: dict = field(default_factory=dict)


def open_parent(client, cfg: DictConfig, tags: dict | None = None) -> Parent:
    """A new parent run with the config logged, or (`cfg.resume`, a config from `resumed_config`) the run to
    finish, with the folds it already finished."""
    if cfg.resume:
        parent_id = cfg.resume
        replay_spool(client, Parent(parent_id, client.get_run(parent_id).info.experiment_id, cfg))
        done = _finished_folds(client, parent_id)
        client.update_run(parent_id, status="RUNNING")
        client.set_tag(parent_id, "hms.resumed", "true")
        return Parent(parent_id, client.get_run(parent_id).info.experiment_id, cfg, done)
    experiment = tracking.experiment_id(client, cfg.tracking.experiment)
    tags = tags or {}
    name = f"{cfg.backbone.name}-{cfg.input.mix}-cv{cfg.cv.folds}"
    if "hms.sweep" in tags:  # a sweep's trial: its study and number first, as the sweep's runs table lists them
        name = f"{tags['hms.sweep']}-trial{tags.get('hms.trial', '?')}-{name}"
    if "hms.seeds" in tags:  # a seed bag
        name += f"-bag{len(tags['hms.seeds'].split(','))}"
    if "hms.seed" in tags:  # one seed's run in a bag
        name += f"-seed{tags['hms.seed']}"
    parent = client.create_run(experiment, run_name=name, tags=tracking.run_tags({"hms.run_type": "cv", **tags}))
    with tracking.failing(client, parent.info.run_id):
        shown = tracking.redacted(cfg)
        tracking.log_params(client, parent.info.run_id, tracking.flat_params(shown))
        client.log_text(parent.info.run_id, OmegaConf.to_yaml(shown, resolve=True), "config.yaml")
    return Parent(parent.info.run_id, experiment, cfg)


def log_training_data(client, run_id: str, cfg: DictConfig, data: TrainingData) -> None:
    """The training samples (eeg_id, patient, votes) and the fold assignment as the run's dataset inputs."""
    columns = ["eeg_id", "patient_id", "total_votes", *TARGET_COLUMNS]
    name = f"{cfg.data.name}-train"
    tracking.log_dataset(client, run_id, data.samples[columns], name, data.root, data.digest, "training")
    import hashlib

    folds = data.samples[["eeg_id", "patient_id", "fold"]]
    digest = hashlib.sha256(data.digest.encode() + folds.to_numpy("int64").tobytes()).hexdigest()[:16]
    tracking.log_dataset(client, run_id, folds, f"{name}-folds{cfg.cv.folds}-seed{fold_seed(cfg)}", data.root, digest, "fold assignment")


def record_fold(client, parent: Parent, child_id: str, fold: int, part: pd.DataFrame, model, baselines: RunBaselines) -> dict:
    """A finished fold's records: its OOF rows, KL and baselines on its child run, its weights on the parent, and
    the fold model as an MLflow logged model (its config and weights; the fold's KL and baselines as its metrics).
    They are written to the spool first (`paths.spool`/<run>/fold<k>) and leave it once the store has them: a fold
    finished while the tracking store was away (or its disk full) is recorded from there on `resume=`, not trained again."""
    fold_scores = cv_scores(part)
    scores = {"kl": fold_scores["cv_kl"], **({"kl_hq": fold_scores["cv_kl_hq"]} if "cv_kl_hq" in fold_scores else {}),
              **baselines.scores([fold])}
    folder = spool_folder(parent, fold)
    writing = folder.with_name(folder.name + f".writing-{os.getpid()}")
    # What the fold's files take: the weights file holds the model's and the optimizer's variables; the OOF rows.
    state = [*model.weights, *(model.optimizer.variables if getattr(model, "optimizer", None) else [])]
    weights = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for v in state)
    needed, what = weights + int(part.memory_usage(deep=True).sum()), f"fold {fold}'s records"
    hint = "Free some space or point paths.spool elsewhere; nothing partial is kept, and resume= trains this fold again"
    disk.check_room(folder, needed, what, largest=weights, hint=hint)
    with disk.room(folder, needed, what, partial=[writing], hint=hint):
        (writing / "model").mkdir(parents=True, exist_ok=True)
        part.to_parquet(writing / "oof_fold.parquet", index=False)
        model.save_weights(writing / "model" / f"fold{fold}.weights.h5")
        (writing / "model" / "config.yaml").write_text(OmegaConf.to_yaml(tracking.redacted(parent.cfg), resolve=True))
        (writing / "record.json").write_text(json.dumps({"child_id": child_id, "fold": fold, "scores": scores}))
    if folder.exists():
        shutil.rmtree(folder)
    writing.rename(folder)  # complete, or not there
    return record_spooled(client, parent, folder)


def spool_folder(parent: Parent, fold: int | None = None) -> Path:
    root = Path(parent.cfg.paths.get("spool") or Path(parent.cfg.paths.root) / "spool") / parent.run_id
    return root if fold is None else root / f"fold{fold}"


def record_spooled(client, parent: Parent, folder: Path) -> dict:
    """Record a spooled fold (see `record_fold`) into the store; the spool folder goes once it is recorded."""
    record = json.loads((folder / "record.json").read_text())
    child_id, fold, scores = record["child_id"], int(record["fold"]), record["scores"]
    tracking.log_artifact(client, child_id, folder / "oof_fold.parquet")
    tracking.log_artifact(client, parent.run_id, folder / "model" / f"fold{fold}.weights.h5", "models")
    model_id = log_fold_model(client, parent, child_id, fold, folder / "model")
    for key, value in scores.items():
        client.log_metric(child_id, key, value, model_id=model_id)
    client.log_metric(parent.run_id, f"fold{fold}_kl", scores["kl"])
    client.set_terminated(child_id, "FINISHED")
    shutil.rmtree(folder)
    for empty in (folder.parent, folder.parent.parent):  # the run's spool folder, then the spool, once nothing waits
        try:
            empty.rmdir()
        except OSError:
            break
    return scores


def replay_spool(client, parent: Parent) -> list[int]:
    """Record the folds a run finished while its tracking store was away (their spool folders); their numbers."""
    root = spool_folder(parent)
    done = []
    for folder in sorted(root.glob("fold*")) if root.is_dir() else []:
        if not (folder / "record.json").is_file() or "." in folder.name:
            continue  # a spool folder still being written when the process ended: the fold is trained again
        record = json.loads((folder / "record.json").read_text())
        log.info(f"fold {record['fold']}: finished but not recorded (the tracking store was away or full); recording it from {folder}")
        client.update_run(record["child_id"], status="RUNNING")
        record_spooled(client, parent, folder)
        done.append(int(record["fold"]))
    return done


def log_fold_model(client, parent: Parent, child_id: str, fold: int, folder: Path) -> str:
    """One fold's model as an MLflow logged model (`models:/<id>`): `config.yaml` and `fold<k>.weights.h5`,
    made by the fold's run, with the fold and the CV run as params and tags. Returns its model id."""
    cfg = parent.cfg
    return tracking.log_model_folder(
        client, parent.experiment, folder, name=f"{cfg.backbone.name}-{cfg.input.mix}-fold{fold}", source_run_id=child_id,
        params={"fold": str(fold), "cv_run": parent.run_id, "backbone.name": cfg.backbone.name, "input.mix": cfg.input.mix,
                "input.tile": str(list(cfg.input.tile)), "cv.folds": str(cfg.cv.folds)},
        tags={"hms.fold": str(fold), "hms.cv_run": parent.run_id}, model_type="hms-fold")


@dataclass
class FoldResults:
    """What the fold loop hands `finish_parent`: each finished fold's OOF rows, the run's baselines, the per-fold
    learning curves, one input as the backbone sees it (or None), and whether a pruner stopped the run early."""

    parts: list
    baselines: RunBaselines
    histories: dict
    picture: np.ndarray | None
    stopped: bool


def finish_parent(client, parent_id: str, folds: FoldResults):
    """Scores over the finished folds beside the baselines, oof.parquet, plots and tags; ends the run.
    Returns (scores, oof frame, learned)."""
    parts, baselines, stopped = folds.parts, folds.baselines, folds.stopped
    oof = pd.concat(parts, ignore_index=True).sort_values("eeg_id").reset_index(drop=True)
    scores = cv_scores(oof)
    scores.update(baselines.scores(sorted(oof.fold.unique())))
    for key, value in scores.items():
        client.log_metric(parent_id, key, value)
    tracking.log_frame(client, parent_id, oof, "oof.parquet")
    tracking.log_frame(client, parent_id, baselines.frame(sorted(oof.fold.unique())), "baselines.parquet")
    learned = has_learned(scores["cv_kl"], scores["prior_kl"])
    client.set_tag(parent_id, "hms.learned", str(learned).lower())
    client.set_tag(parent_id, "mlflow.note.content", describe_run(scores, learned, len(oof), stopped))
    _log_plots(client, parent_id, folds.histories, oof, folds.picture)
    if stopped:
        client.set_tag(parent_id, "hms.pruned", "true")
    client.set_terminated(parent_id, "KILLED" if stopped else "FINISHED")
    return scores, oof, learned


def run_cv(cfg: DictConfig, tags: dict | None = None, on_fold=None, overrides=()) -> float:
    """Cross-validate the config: K folds in one MLflow parent run with one child run per fold.

    `tags` go on the parent run. `on_fold(fold, fold_kl, run_id)` is called as each fold finishes;
    if it returns True the run stops there (a sweep's pruner): it keeps its finished folds' records,
    is tagged `hms.pruned=true` and ended KILLED, and the KL over those folds is returned.
    `overrides` (the command line's) are checked against a resumed run's own config."""
    from .devices import configure, precision_policy

    if cfg.get("join"):
        return join_run(cfg, overrides)
    # Everything that can be refused (config, backend, data files, folds) is checked before a run is recorded, and a
    # new run's backend before its store is opened (a resumed run's comes from its own config, in the store).
    client = tracking.client_for(cfg.tracking) if cfg.resume else None
    if cfg.resume:
        cfg = resumed_config(client, cfg.resume, cfg, overrides)
    if cfg.cv.get("seeds"):  # a seed bag: one CV run per seed under one parent (hms.bag)
        return run_bag(client or tracking.client_for(cfg.tracking), cfg, tags, on_fold)
    cfg = on_backend(cfg)
    cfg = _only_process_zero_records(cfg, on_fold)
    parallel = cfg.cv.get("workers", 1) > 1
    if parallel and on_fold is not None:
        raise ConfigError("cv.workers > 1 trains a run's folds in parallel processes, but a sweep prunes its trials fold by "
                          "fold in one process: leave cv.workers at 1 and run trials side by side with hms.sweep --workers")
    client = client or tracking.client_for(cfg.tracking)
    devices = None if parallel else configure(cfg.trainer)  # the workers configure their own
    data = load_training_data(cfg)
    check_score_rows(cfg, data)
    parent = open_parent(client, cfg, tags)
    parent_id = parent.run_id
    log.info(f"MLflow run {parent_id} (experiment {parent.experiment}) at {tracking.tracking_uri(cfg.tracking)}")
    if parallel:
        return coordinate(client, cfg, data, parent)
    log.info(f"training on {devices.description}")
    with tracking.failing(client, parent_id), logs.run_log(client, parent_id):
        if not cfg.resume:
            log_training_data(client, parent_id, cfg, data)
        with precision_policy(devices.precision), tracking.SystemMetrics(
                parent_id, tracking.tracking_uri(cfg.tracking), cfg.tracking.get("system_metrics")):
            with devices.running():
                try:
                    finished = _fold_loop(client, cfg, devices, data, parent, on_fold)
                except KeyboardInterrupt as error:  # a fold run the interrupt reached before its own block: ended too
                    _end_running_folds(client, parent, error)
                    raise
        scores, oof, learned = finish_parent(client, parent_id, finished)
        log.info(score_line(scores) + f"  over {len(oof)} out-of-fold rows")
        if not learned:
            log.warning(not_learned_warning(scores))
    log.info(_view_line(cfg, parent))
    return scores[score_key(cfg)]


def score_key(cfg) -> str:
    """The KL a run returns to sweeps (cv.score_on): cv_kl over all OOF rows, or cv_kl_hq over those with >= 10 votes.
    Both are always logged."""
    return "cv_kl_hq" if cfg.cv.get("score_on", "all") == "hq" else "cv_kl"


def fold_score_key(cfg) -> str:
    """A fold's counterpart of `score_key` (the child run's metric a sweep's pruner sees)."""
    return "kl_hq" if cfg.cv.get("score_on", "all") == "hq" else "kl"


def check_score_rows(cfg, data: TrainingData) -> None:
    """cv.score_on=hq needs rows with >= 10 votes in every fold it trains, or there is no KL to return."""
    if cfg.cv.get("score_on", "all") != "hq":
        return
    hq = data.samples[data.samples.total_votes >= HQ_VOTES]
    empty = [fold for fold in planned_folds(cfg) if not (hq.fold == fold).any()]
    if empty:
        raise ConfigError(f"cv.score_on=hq: fold(s) {empty} of {data.root} have no rows with >= {HQ_VOTES} votes to score; "
                          f"use cv.score_on=all")


def run_bag(client, cfg: DictConfig, tags: dict | None, on_fold) -> float:
    """Train (or, `resume=<bag>`, finish) every seed's CV run under one bag run; record the averaged OOF.
    Returns the bag's KL (cv.score_on). See `hms.bag`."""
    from .bag import BAG_TAG, SEED_TAG, SEEDS_TAG, check_bag, finish_bag, seed_config, seed_runs

    seeds = check_bag(cfg, on_fold)
    bag = open_parent(client, cfg, {**(tags or {}), SEEDS_TAG: ",".join(map(str, seeds))})
    log.info(f"seed bag {bag.run_id}: seeds {seeds}, folds of seed {fold_seed(cfg)}")
    with tracking.failing(client, bag.run_id):
        existing = seed_runs(client, bag) if cfg.resume else {}
        for seed in seeds:
            run = existing.get(seed)
            if run is not None and run.info.status == "FINISHED":
                log.info(f"seed {seed}: finished earlier (run {run.info.run_id}), kept")
                continue
            one = seed_config(cfg, seed)
            if run is not None:
                one.resume = run.info.run_id
                log.info(f"seed {seed}: resuming run {run.info.run_id}")
            else:
                log.info(f"seed {seed}: training")
            run_cv(one, {**(tags or {}), "mlflow.parentRunId": bag.run_id, BAG_TAG: bag.run_id, SEED_TAG: str(seed)})
        runs = seed_runs(client, bag)
        missing = [s for s in seeds if s not in runs or runs[s].info.status != "FINISHED"]
        if missing:
            raise RuntimeError(f"seed bag {bag.run_id}: the runs of seed(s) {missing} did not finish")
        scores = finish_bag(client, bag.run_id, [runs[s] for s in seeds], seeds)
    log.info(score_line(scores) + f"  (seed bag of {len(seeds)}; one seed {scores['seed_cv_kl_mean']:.4f}, "
             f"gain {scores['bag_gain']:+.4f})")
    if not has_learned(scores["cv_kl"], scores["prior_kl"]):
        log.warning(not_learned_warning(scores))
    log.info(_view_line(cfg, bag))
    return scores[score_key(cfg)]


def _only_process_zero_records(cfg, on_fold) -> DictConfig:
    """A run spread over several processes (trainer.distributed) joins them now. All run the same folds in step, and
    only process 0 records into the run's store: the others record into a scratch store of their own, deleted when
    they end."""
    import atexit
    import shutil

    from .devices import join_processes

    distributed = cfg.trainer.get("distributed")
    if distributed is None or not distributed.enabled:
        return cfg
    if cfg.resume or on_fold is not None:
        raise ConfigError("trainer.distributed: a resumed run and a sweep's trials run in one process each; "
                          "start a new run without resume= (or leave trainer.distributed.enabled=false)")
    index, count = join_processes(cfg.trainer)
    if index == 0:
        return cfg
    scratch = tempfile.mkdtemp(prefix=f"hms-process{index}-")
    atexit.register(shutil.rmtree, scratch, True)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg))
    cfg.tracking.uri = f"sqlite:///{scratch}/mlflow.db"
    log.info(f"process {index} of {count}: process 0 records the run; this one records into a scratch store")
    return cfg


def _view_line(cfg, parent: Parent) -> str:
    return tracking.view_line(cfg.tracking, parent.experiment, parent.run_id)


def describe_run(scores: dict, learned: bool, rows: int, stopped: bool = False) -> str:
    """The CV run's description (its page's Description, `mlflow.note.content`): the score line beside the class prior
    and the feature model, the verdict, and a table of the folds."""
    folds = sorted(int(k[4:-3]) for k in scores if re.fullmatch(r"fold\d+_kl", k))
    ratio = scores["cv_kl"] / scores["prior_kl"] if scores.get("prior_kl") else float("nan")
    verdict = (f"**Learned**: {ratio:.2f}x the class prior's KL." if learned else
               f"**Did not learn**: {ratio:.2f}x the class prior's KL; a run has learned at 0.9x or below.")
    lines = [f"**cv_kl {scores['cv_kl']:.4f}** beside the class prior's prior_kl {scores['prior_kl']:.4f} and the feature "
             f"model's baseline_kl {scores['baseline_kl']:.4f}, over {rows} out-of-fold rows"
             + (" (pruned: the folds below only)" if stopped else "") + ".", "", verdict, ""]
    if "cv_kl_std" in scores:
        lines += [f"Fold KLs spread: cv_kl_std {scores['cv_kl_std']:.4f} (sample standard deviation over {len(folds)} folds).", ""]
    lines += ["| fold | KL |", "| --- | --- |", *(f"| {k} | {scores[f'fold{k}_kl']:.4f} |" for k in folds)]
    return "\n".join(lines)


# --- folds in parallel processes (cv.workers, join=) ------------------------------------------------------------

def queue_storage(cfg) -> str:
    from .foldqueue import ready

    return ready(cfg.cv.get("queue") or cfg.paths.folds)


def coordinate(client, cfg, data: TrainingData, parent: Parent) -> float:
    """`cv.workers=N`: queue the run's folds, start N `hms.train join=<run>` workers (each on its own GPU where there
    are any; on a CPU they share its cores), wait for them and return the CV KL their last one recorded."""
    from .foldqueue import TAG, FoldQueue

    url = queue_storage(cfg)
    with tracking.failing(client, parent.run_id):
        if not cfg.resume:
            log_training_data(client, parent.run_id, cfg, data)
        todo = [f for f in planned_folds(cfg) if f not in parent.done]
        queue = FoldQueue.create(url, parent.run_id, todo, cfg.cv.heartbeat)
        client.set_tag(parent.run_id, TAG, queue.name)
        client.set_tag(parent.run_id, "hms.fold_queue_storage", tracking.redact(url))
    log.info(f"fold queue {queue.name} at {tracking.redact(url)}: folds {todo} for {cfg.cv.workers} workers; more can join "
             f"from any machine with `python -m hms.train join={parent.run_id} cv.queue=<that storage>`")
    argv = [sys.executable, "-m", "hms.train", f"join={parent.run_id}", f"cv.queue={url}"]
    env = {"KERAS_BACKEND": cfg.trainer.backend, "MLFLOW_TRACKING_URI": tracking.tracking_uri(cfg.tracking),
           "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if cfg.cv.launcher == "none":
        log.info(f"no workers started (cv.launcher=none): run {parent.run_id} stays RUNNING until its workers have trained "
                 f"every fold. Start {cfg.cv.workers} of them where they should run, each with\n    python -m hms.train "
                 f"join={parent.run_id} cv.queue={tracking.redact(url)} tracking.uri={tracking.redact(tracking.tracking_uri(cfg.tracking))}")
        return float("nan")
    try:
        codes = (_submitit_workers if cfg.cv.launcher == "submitit" else _local_workers)(cfg, argv, env)
    except KeyboardInterrupt as error:  # ended (SIGTERM, Ctrl-C) with its workers: the run is KILLED, its folds kept
        tracking.fail_run(client, parent.run_id, error)
        error.run_id = parent.run_id
        raise
    run = client.get_run(parent.run_id)
    for w, code in enumerate(codes):
        if code and run.info.status == "FINISHED":
            log.warning(f"fold worker {w} ended with exit code {code}; the others took over its folds")
    if run.info.status != "FINISHED":
        error = run.data.tags.get("hms.error", "")
        raise RuntimeError(f"the fold workers ended (exit codes {codes}) without finishing run {parent.run_id}"
                           f"{': ' + error if error else ''}. Continue it with `python -m hms.train join={parent.run_id}` "
                           "(more workers) or `resume=` (a fresh queue).")
    scores = run.data.metrics
    log.info(score_line(scores))
    log.info(_view_line(cfg, parent))
    return scores[score_key(cfg)]


def _worker_envs(workers: int, env: dict, gpus: list[str]) -> list[dict]:
    """Each worker's environment: its index, one GPU of `gpus` where there are any, else its share of the cores."""
    import os

    threads = max(1, (os.cpu_count() or 1) // workers)
    envs = []
    for w in range(workers):
        own = {**env, "HMS_WORKER": str(w)}
        if gpus:
            own["CUDA_VISIBLE_DEVICES"] = gpus[w % len(gpus)]
        else:  # share the cores instead of each worker's thread pools taking all of them
            own.update(OMP_NUM_THREADS=str(threads), TF_NUM_INTRAOP_THREADS=str(threads), TF_NUM_INTEROP_THREADS="1")
        envs.append(own)
    return envs


def _local_workers(cfg, argv: list[str], env: dict) -> list[int]:
    """`cv.launcher=local`: the workers as child processes of this one; their exit codes."""
    import os
    import subprocess

    from .devices import visible_gpus

    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g] or visible_gpus()
    processes = [subprocess.Popen(argv, env={**os.environ, **own}) for own in _worker_envs(cfg.cv.workers, env, gpus)]
    # Ended (SIGTERM, Ctrl-C), it ends its workers too, each giving its fold back.
    return tracking.wait_passing_signals(processes)


def run_worker(argv: list[str], env: dict) -> int:
    """One fold worker inside a submitit job: `python -m hms.train join=<run>` (the command the other recipes run)
    in a fresh process, so that it picks its Keras backend before Keras starts; its exit code."""
    import os
    import subprocess

    sys.stdout.flush()
    return subprocess.call(argv, env={**os.environ, **env})


def _submitit_workers(cfg, argv: list[str], env: dict) -> list[int]:
    """`cv.launcher=submitit`: the workers as one job array, on SLURM where `srun` is found (one GPU per task
    there, SLURM sets CUDA_VISIBLE_DEVICES), else as local processes that share the cores; their exit codes."""
    try:
        import submitit
    except ImportError as error:
        raise ConfigError("cv.launcher=submitit needs the submitit package: pip install -e '.[cluster]'") from error
    options = cfg.cv.submitit
    executor = submitit.AutoExecutor(folder=options.folder, cluster=options.cluster)
    parameters = {"name": "hms-fold-workers", "timeout_min": options.timeout_min, "stderr_to_stdout": True,
                  "slurm_gpus_per_node": options.gpus_per_node}
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.cpus_per_task:
        parameters["cpus_per_task"] = options.cpus_per_task
    if options.mem_gb:
        parameters["mem_gb"] = options.mem_gb
    if options.array_parallelism:
        parameters["slurm_array_parallelism"] = options.array_parallelism
    if options.additional:
        parameters["slurm_additional_parameters"] = dict(options.additional)
    executor.update_parameters(**parameters)
    local = executor.cluster != "slurm"
    envs = _worker_envs(cfg.cv.workers, env, []) if local else [{**env, "HMS_WORKER": str(w)} for w in range(cfg.cv.workers)]
    jobs = executor.map_array(run_worker, [argv] * len(envs), envs)
    log.info(f"submitted {len(jobs)} fold workers to {executor.cluster} (jobs {', '.join(j.job_id for j in jobs)}); "
             f"their logs are under {options.folder}")
    codes = []
    for job in jobs:
        try:
            codes.append(job.result())
        except submitit.core.utils.UncompletedJobError as error:  # a job that died without result (cancelled, node lost)
            log.warning(f"fold worker job {job.job_id}: {str(error).splitlines()[0]}")
            codes.append(-1)
    return codes


# A worker's name: ours, a Kubernetes Indexed Job's pod index, a SLURM array task's index (else host and pid).
WORKER_ENV = ("HMS_WORKER", "JOB_COMPLETION_INDEX", "SLURM_ARRAY_TASK_ID")

JOIN_FREE = ("join", "tracking", "paths", "cv.queue", "cv.workers", "cv.heartbeat", "data.root", "data.cache_dir",
             "data.workers", "trainer.workers")  # where things are on the joining machine, not what the run trains


def join_run(cfg: DictConfig, overrides=()) -> float:
    """`join=<run>`: a fold worker. Claims the run's folds from its queue until none is left, trains and records each,
    and the one that finds the last fold done finishes the run. Returns the run's CV KL."""
    from .devices import configure, precision_policy
    from .foldqueue import TAG, FoldQueue

    run_id = cfg.join
    client = tracking.client_for(cfg.tracking)
    cfg = resumed_config(client, run_id, cfg, overrides, free=JOIN_FREE)
    cfg.resume, cfg.join = None, run_id
    cfg = on_backend(cfg)
    run = client.get_run(run_id)
    name = run.data.tags.get(TAG)
    if name is None:
        raise ConfigError(f"join={run_id}: the run was not started with cv.workers > 1, so it has no fold queue "
                          f"(continue it with resume={run_id})")
    queue = FoldQueue.open(queue_storage(cfg), name, cfg.cv.heartbeat)
    parent = Parent(run_id, run.info.experiment_id, cfg)
    if queue.finished():
        log.info(f"run {run_id} is finished: nothing left to train")
        return client.get_run(run_id).data.metrics[score_key(cfg)]
    devices = configure(cfg.trainer)
    data = load_training_data(cfg)
    recorded = {i.dataset.digest for i in run.inputs.dataset_inputs if i.dataset.name == f"{cfg.data.name}-train"}
    if recorded and data.digest not in recorded:
        raise ConfigError(f"join={run_id}: the data under {data.root} (digest {data.digest}) is not the data the run "
                          f"trains on (digest {', '.join(sorted(recorded))}); point data.root at the same files")
    worker = next((os.environ[k] for k in WORKER_ENV if os.environ.get(k)), f"{socket.gethostname()}-{os.getpid()}")
    log.info(f"worker {worker} joins run {run_id} (queue {queue.name}) on {devices.description}")
    # A worker that is interrupted (SIGTERM) gives its fold back and leaves the run to the others.
    with tracking.failing(client, run_id, interrupts=False), logs.run_log(client, run_id, prefix=f"worker{worker}-"):
        with precision_policy(devices.precision), devices.running():
            scores = _work(client, cfg, devices, data, parent, queue, worker)
    if scores is None:  # another worker finished the run
        scores = client.get_run(run_id).data.metrics
    log.info(f"worker {worker}: no fold left")
    return scores[score_key(cfg)]


def _work(client, cfg, devices, data: TrainingData, parent: Parent, queue, worker: str):
    """Claim and train folds until the run is finished; returns the scores if this worker finished it."""
    from .foldqueue import FINISH, QueueError

    trainer = _FoldTrainer(client, cfg, devices, data, parent, tags={"hms.worker": worker})
    first = planned_folds(cfg)[0]
    scores = None
    while True:
        for dead in queue.reap():
            run_id = dead.user_attrs.get("mlflow_run_id")
            fold = queue.fold_of(dead)
            if run_id and client.get_run(run_id).info.status == "RUNNING":
                tracking.fail_run(client, run_id, RuntimeError(
                    f"the worker training fold {fold} died (no heartbeat for {3 * cfg.cv.heartbeat:g} s); the fold is trained again"))
            log.info(f"fold {fold}: its worker died; queued again")
        errors = queue.errors()
        if errors:
            raise QueueError(f"run {parent.run_id}: {errors[0]}; continue the run with resume={parent.run_id} once it is fixed")
        with queue.next_claim() as claim:
            if claim is None:
                if queue.finished():
                    return scores
                time.sleep(min(2.0, cfg.cv.heartbeat))
                continue
            if claim.fold == FINISH:
                scores = _finish_from_store(client, cfg, parent, trainer.baselines)
                continue
            if _fold_finished(client, parent.run_id, claim.fold):  # its worker died after finishing it, before saying so
                log.info(f"fold {claim.fold}: finished by a worker that died before it told the queue; kept, not retrained")
                continue
            child_id = trainer.open(claim.fold, announce=False)
            queue.note(claim, "mlflow_run_id", child_id)  # before anything else: a worker killed now has its run closed
            trainer.announce(claim.fold, child_id)
            trainer.train(claim.fold, first=claim.fold == first, child_id=child_id)
            if claim.fold == first and trainer.example is not None:
                from . import plots

                tracking.log_figures(client, parent.run_id, {"input_montage.png": plots.montage(
                    trainer.example, "one validation input as the backbone sees it")})


def _end_running_folds(client, parent: Parent, error: BaseException) -> None:
    """Mark the parent's fold runs still RUNNING as ended by `error` (KILLED for an interrupt)."""
    for child in client.search_runs([parent.experiment], f"tags.mlflow.parentRunId = '{parent.run_id}' "
                                    "and attributes.status = 'RUNNING'"):
        tracking.fail_run(client, child.info.run_id, error)


def _fold_finished(client, parent_id: str, fold: int) -> bool:
    """Whether the run holds a FINISHED run of the fold."""
    experiment = client.get_run(parent_id).info.experiment_id
    return bool(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent_id}' and tags.`hms.fold` = '{fold}' "
                                                 "and attributes.status = 'FINISHED'", max_results=1))


def _finish_from_store(client, cfg, parent: Parent, baselines) -> dict:
    """The finishing step of a run whose folds were trained by workers: every planned fold's OOF rows and learning
    curves read back from its FINISHED fold run, then `finish_parent`. A missing fold is an error, never a smaller
    average."""
    done = _finished_folds(client, parent.run_id)
    folds = planned_folds(cfg)
    missing = [f for f in folds if f not in done]
    if missing:
        raise RuntimeError(f"run {parent.run_id}: folds {missing} have no FINISHED fold run, so the run cannot be scored")
    histories = {f: _stored_history(client, parent.run_id, f) for f in folds}
    scores, oof, learned = finish_parent(client, parent.run_id, FoldResults([done[f] for f in folds], baselines, histories,
                                                                            None, False))
    log.info(score_line(scores) + f"  over {len(oof)} out-of-fold rows")
    if not learned:
        log.warning(not_learned_warning(scores))
    log.info(_view_line(cfg, parent))
    return scores


def _stored_history(client, parent_id: str, fold: int) -> dict:
    """A finished fold's per-epoch loss, val_loss and val_kl, as its run recorded them."""
    [child] = [r for r in client.search_runs([client.get_run(parent_id).info.experiment_id],
                                             f"tags.mlflow.parentRunId = '{parent_id}' and tags.`hms.fold` = '{fold}' "
                                             "and attributes.status = 'FINISHED'")]
    return {key: [m.value for m in sorted(client.get_metric_history(child.info.run_id, key), key=lambda m: m.step)]
            for key in ("loss", "val_loss", "val_kl")}


def on_backend(cfg: DictConfig) -> DictConfig:
    """The config as this process runs it: Keras on `trainer.backend` (chosen now if Keras is not yet imported), and
    that backend and the backbone's source (auto resolved) written into it, so that the run records what it ran."""
    from .backends import resolved_source, select

    backend = select(cfg.trainer)
    cfg = cfg.copy()
    cfg.trainer.backend = backend
    cfg.backbone.source = resolved_source(cfg.backbone.source, backend)
    return cfg


def _fold_loop(client, cfg, devices, data: TrainingData, parent: Parent, on_fold) -> FoldResults:
    """Train the planned folds a parent run has not finished; returns what `finish_parent` takes.
    A fold that fails has its child run marked FAILED before the error goes on."""
    folds = planned_folds(cfg)
    trainer = _FoldTrainer(client, cfg, devices, data, parent)
    parts, stopped = [], False
    for fold in folds:
        if fold in parent.done:
            log.info(f"fold {fold}: finished earlier, kept")
            parts.append(parent.done[fold])
            continue
        part, scores = trainer.train(fold, first=trainer.fresh_model is None)
        parts.append(part)
        if on_fold is not None and on_fold(fold, scores[fold_score_key(cfg)], parent.run_id):
            stopped = fold != folds[-1]
            if stopped:
                log.info(f"stopped after fold {fold} (pruned)")
                break
    return FoldResults(parts, trainer.baselines, trainer.histories, trainer.example, stopped)


class _FoldTrainer:
    """Trains and records one fold at a time into a parent run: its child run, weights, OOF rows and scores. The
    first fold it is told is the run's first (`first=True`) also records the model's dtypes, the resolved recipe and
    the input picture, once per run whichever process trains it."""

    def __init__(self, client, cfg, devices, data: TrainingData, parent: Parent, tags: dict | None = None):
        from .representations import representation_for

        self.client, self.cfg, self.devices, self.data, self.parent = client, cfg, devices, data, parent
        self.tags = tags or {}
        self.representation = representation_for(cfg)
        self.baselines = RunBaselines(data.samples, data.sources, data.fixed_rows, features=self.representation.baseline_features)
        self.histories, self.example, self.fresh_model = {}, None, None

    def open(self, fold: int, announce: bool = True) -> str:
        child_id = self.client.create_run(self.parent.experiment, run_name=f"fold {fold}", tags=tracking.run_tags({
            "mlflow.parentRunId": self.parent.run_id, "hms.fold": str(fold), "hms.run_type": "fold", **self.tags})).info.run_id
        if announce:
            self.announce(fold, child_id)
        return child_id

    def announce(self, fold: int, child_id: str) -> None:
        by = f", worker {self.tags['hms.worker']} pid {os.getpid()}" if "hms.worker" in self.tags else ""
        log.info(f"fold {fold}: training (MLflow run {child_id}{by})")

    def train(self, fold: int, first: bool, child_id: str | None = None):
        from .models import resolved_recipe

        client, cfg, parent = self.client, self.cfg, self.parent
        announce = child_id is None
        child_id = child_id or self.open(fold, announce=False)
        with tracking.failing(client, child_id):
            if announce:  # inside: from the line that names the fold's run on, an interrupt ends that run
                self.announce(fold, child_id)
            if self.fresh_model is None:
                steps = _steps_per_epoch(cfg, self.data.samples)
                self.fresh_model = FreshModel(cfg, self.devices, steps)
            if first:
                client.set_tag(parent.run_id, "hms.dtypes", model_dtypes(self.fresh_model.model))
                # What `auto` became for this run, beside the config's own params.
                recipe = resolved_recipe(cfg.backbone, _steps_per_epoch(cfg, self.data.samples))
                recipe["eager"] = self.fresh_model.model.run_eagerly
                tracking.log_params(client, parent.run_id, {f"recipe.{k}": str(v) for k, v in recipe.items()})
            model, rows, predictions, val = train_fold(cfg, self.devices, self.data, fold, self.fresh_model, client, child_id,
                                                       self.histories.setdefault(fold, {}))
            part = oof_frame(self.data.samples, rows, predictions)
            scores = record_fold(client, parent, child_id, fold, part, model, self.baselines)
        log.info(f"fold {fold}: KL {scores['kl']:.4f}  prior_kl {scores['prior_kl']:.4f}  baseline_kl {scores['baseline_kl']:.4f}")
        if first:
            self.example = self.representation.picture(model, val[0][0])
        return part, scores


def _log_plots(client, run_id, histories, oof, example) -> None:
    from . import plots

    y, p = oof[list(TARGET_COLUMNS)].to_numpy(), oof[list(PRED_COLUMNS)].to_numpy()
    figures = {"per_class_kl.png": plots.per_class_kl(y, p),
               "confusion_matrix.png": plots.confusion_matrix(y.argmax(axis=1), p.argmax(axis=1))}
    if histories:
        figures["learning_curves.png"] = plots.learning_curves(histories)
    if example is not None:
        figures["input_montage.png"] = plots.montage(example, "one validation input as the backbone sees it")
    tracking.log_figures(client, run_id, figures)
