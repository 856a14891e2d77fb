"""Helpers the tests share: paths, running a command as a user would, tiny run overrides, reading a run store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HMS_SHARED", REPO.parent / "shared"))
KAGGLE_SAMPLE = SHARED / "data" / "kaggle_sample"
TRAIN_VOTES = SHARED / "data" / "train_votes.csv"


def run_module(*args, cwd=None, env=None):
    """Run `python -m ...` as a user would, returning the completed process."""
    import subprocess

    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=900)


TINY = ["backbone=efficientnet_b0", "input.tile=[16,32]", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null",
        "trainer.epochs=2", "schedule.steps=[[0,1.0e-3],[0.5,3.0e-4]]"]


def tiny(root, store, *extra):
    return [*TINY, "data=kaggle", f"data.root={root}", f"data.cache_dir={store}/cache", "data.workers=1",
            f"tracking.uri=sqlite:///{store}/mlflow.db", *extra]


def runs(store, experiment="hms"):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client, exp, client.search_runs([exp.experiment_id])


SAME_FOLDS = "params.`cv.folds` = '2'"


def data_overrides(root, store):
    """Overrides that point hms.predict (or compose) at a dataset and a run store."""
    return ["data=kaggle", f"data.root={root}", f"data.cache_dir={store}/cache", "data.workers=1", f"tracking.uri=sqlite:///{store}/mlflow.db"]
