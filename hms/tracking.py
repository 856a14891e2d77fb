"""MLflow records of a run: experiment, CV parent run, fold child runs, artifacts, UI address."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri(tracking) -> str:
    """`tracking.uri` if set, else MLFLOW_TRACKING_URI, else `tracking.store` (a config's `paths.tracking`)."""
    uri = tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or tracking.get("store")
    if not uri:
        raise ValueError("no MLflow store: set tracking.uri (or MLFLOW_TRACKING_URI, or tracking.store)")
    return uri


def client_for(tracking):
    """An MlflowClient on the configured store. A SQLite file is created, schema and all, by one process at a
    time under a lock beside it: two runs starting together on a fresh file would otherwise both migrate it."""
    from mlflow import MlflowClient

    uri = tracking_uri(tracking)
    database = _sqlite_file(uri)
    if database is None:
        return MlflowClient(uri)
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)  # creates and migrates the schema, once
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return client


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `mlruns/` beside a SQLite store's file (not in whatever
    folder the command ran from); None (the server's or MLflow's default) for other stores."""
    database = _sqlite_file(uri)
    return None if database is None else (database.resolve().parent / "mlruns").as_uri()


def experiment_id(client, name: str) -> str:
    """The experiment `name`, created (tagged as a model-development experiment) if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri), tags=EXPERIMENT_KIND)
        except MlflowException:  # another process created it between our look and our insert
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND["mlflow.experimentKind"])
    return experiment.experiment_id


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    """A URI with its password replaced by ***: `postgresql://user:***@host/db`."""
    return _CREDENTIALS.sub(r"\g<scheme>:***@", text)


def redacted(cfg: DictConfig) -> DictConfig:
    """A copy of a run config that can be recorded: a password in tracking.uri replaced by ***."""
    out = cfg.copy()
    if OmegaConf.select(out, "tracking.uri"):
        out.tracking.uri = redact(str(out.tracking.uri))
    return out


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as text (lists as YAML flow)."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = str(value)[:6000]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def log_model_folder(client, experiment_id: str, folder, **spec) -> str:
    """A folder as one MLflow logged model (`models:/<id>`): created with `spec` (name, source_run_id, model_type,
    params, tags), its files uploaded, then READY (FAILED if the upload fails). Returns the model id."""
    logged = client.create_logged_model(experiment_id, **spec)
    try:
        client.log_model_artifacts(logged.model_id, str(folder))
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


def log_frame(client, run_id: str, frame, name: str) -> None:
    """Log a DataFrame as a parquet artifact `name`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path, index=False)
        client.log_artifact(run_id, str(path))


def read_frame(client, run_id: str, name: str):
    """Read back a parquet artifact logged with `log_frame`."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(run_id, name, tmp))


def ui_address(tracking, experiment: str, run_id: str) -> str:
    """Where `mlflow ui` (or the tracking server) shows the run, on its runs table rather than the GenAI overview."""
    uri = tracking_uri(tracking)
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"
    return f"{base}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


@contextlib.contextmanager
def failing(client, run_id: str, interrupts: bool = True):
    """Inside the block, an error marks the run FAILED with the reason, then goes on; an interrupt (Ctrl-C, or SIGTERM
    as `Preempted`) marks it KILLED with the reason. `interrupts=False`: an interrupt leaves the run as it is (a fold
    worker's: the run goes on in the other workers)."""
    try:
        yield
    except BaseException as error:
        if interrupts or not isinstance(error, KeyboardInterrupt):
            fail_run(client, run_id, error)
            if isinstance(error, KeyboardInterrupt):
                error.run_id = run_id  # the outermost run marked: the one to resume
        raise


class Preempted(KeyboardInterrupt):
    """The process was sent SIGTERM (a scheduler ending or preempting the job): ends the command as Ctrl-C does."""


@contextlib.contextmanager
def ending_on_signals():
    """Inside the block, SIGTERM raises `Preempted` (SIGINT raises KeyboardInterrupt, as always): every `failing` block
    on the way out marks its run KILLED with the signal's name, finished folds stay recorded, and the command exits
    with 128 + the signal's number. Outside the main thread, nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def preempt(number, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the way out must not be interrupted again
        raise Preempted(f"ended by {signal.Signals(number).name}")

    previous = signal.signal(signal.SIGTERM, preempt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def log_figures(client, run_id: str, figures: dict, folder: str = "plots") -> None:
    """Draw each figure (`name.png` -> matplotlib figure) to a file and log it under `folder` of the run."""
    from .plots import save

    with tempfile.TemporaryDirectory() as tmp:
        for name, figure in figures.items():
            save(figure, Path(tmp) / name)
            client.log_artifact(run_id, str(Path(tmp) / name), folder)


def ui_command(tracking) -> str:
    """The `mlflow ui` command that opens the store a run used (a server URI is opened as it is)."""
    uri = tracking_uri(tracking)
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    database = _sqlite_file(uri)
    shown = f"sqlite:///{database.resolve()}" if database is not None else redact(uri)
    return f"mlflow ui --backend-store-uri {shown}"


def fail_run(client, run_id: str, error: BaseException) -> None:
    """Mark a run FAILED (KILLED where it was interrupted: Ctrl-C or SIGTERM) and record why."""
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    client.set_tag(run_id, "hms.error", message[:5000])
    client.set_terminated(run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def run_tags(tags: dict) -> dict:
    """`tags` with the provenance MLflow's fluent runs carry: source name and type, git commit (when the
    command runs from a git checkout), user. Runs made with MlflowClient.create_run get none by themselves."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags(dict(tags))


class SystemMetrics:
    """CPU, memory, disk, network (and GPU, with pynvml) of the machine sampled every `seconds` into a run's
    `system/` metrics while the block runs; `seconds` null or 0 turns it off."""

    def __init__(self, run_id: str, uri: str, seconds):
        self.monitor = None
        if seconds:
            import logging

            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=float(seconds), samples_before_logging=1,
                                                tracking_uri=uri)

    def __enter__(self):
        if self.monitor is not None:
            self.monitor.start()
        return self

    def __exit__(self, *exc):
        if self.monitor is not None:
            self.monitor.finish()
        return False


def log_dataset(client, run_id: str, frame, name: str, source: str, digest: str, context: str) -> None:
    """A table as an MLflow dataset input of the run (the UI's Datasets column): name, digest, source."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer columns in an inferred schema
        entity = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)._to_mlflow_entity()
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    for attempt in range(5):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception as error:  # noqa: BLE001 - only a lost insert race is retried
            # MLflow looks the dataset up, then inserts it: two runs logging the same new dataset at once race, and
            # the loser's transaction fails on the unique key and rolls back. Again, it finds the winner's row.
            if attempt == 4 or not _lost_insert_race(error):
                raise


def _lost_insert_race(error: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    text = str(error)
    return isinstance(error.__cause__, IntegrityError) or "UNIQUE constraint failed" in text or "duplicate key value" in text
