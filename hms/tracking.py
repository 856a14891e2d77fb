"""MLflow records of a run: experiment, CV parent run, fold child runs, artifacts, UI address."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

DEFAULT_URI = "sqlite:///mlflow.db"
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}


def tracking_uri(tracking) -> str:
    """`tracking.uri` if set, else MLFLOW_TRACKING_URI, else the embedded SQLite store."""
    return tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def client_for(tracking):
    """An MlflowClient on the configured store."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri(tracking))


def experiment_id(client, name: str) -> str:
    """The experiment `name`, created (tagged as a model-development experiment) if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, tags=EXPERIMENT_KIND)
        except MlflowException:  # another process created it between our look and our insert
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND["mlflow.experimentKind"])
    return experiment.experiment_id


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


def fail_run(client, run_id: str, error: BaseException) -> None:
    """Mark a run failed and record why."""
    message = f"{type(error).__name__}: {error}"
    client.set_tag(run_id, "hms.error", message[:5000])
    client.set_terminated(run_id, "FAILED")
