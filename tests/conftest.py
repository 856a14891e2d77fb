"""Shared, session-scoped fixtures: expensive things are built once."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
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


@pytest.fixture(scope="session")
def kaggle_sample() -> Path:
    """The real public test files in Kaggle's layout (shared/data/kaggle_sample)."""
    if not KAGGLE_SAMPLE.is_dir():
        pytest.fail(f"{KAGGLE_SAMPLE} is missing: the shared folder must sit beside the repository (or set HMS_SHARED)")
    return KAGGLE_SAMPLE


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset (40 train eeg_ids, 10 patients, 8 test eeg_ids), generated once."""
    from hms.synth import SynthSpec, generate

    root = tmp_path_factory.mktemp("synthetic") / "hms"
    generate(root, SynthSpec(eegs=40, patients=10, seed=7, test_eegs=8))
    return root


TINY = ["backbone=efficientnet_b0", "input.tile=[16,32]", "trainer.batch_size=16", "trainer.verbose=0",
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
