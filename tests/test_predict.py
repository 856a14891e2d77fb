"""Submissions from real runs and ensembles: Kaggle's format, scored against the synthetic answer key."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from hms.config import compose
from hms.constants import SUBMISSION_COLUMNS, VOTE_COLUMNS
from hms.ensemble import run_ensemble
from hms.metrics import kaggle_score
from hms.predict import PredictError, export, load_bundle, predict
from hms.synth import SynthSpec, generate, read_meta
from hms.train import run_cv

from .conftest import run_module, runs, tiny


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory):
    """A B0 trained long enough to learn with the default recipe: 300 synthetic eeg_ids of another seed than the
    embedded default (60 test eeg_ids with an answer key), 2 folds, 10 epochs, 16x32 tiles, batch 16."""
    store = tmp_path_factory.mktemp("learned")
    root = store / "data"
    generate(root, SynthSpec(eegs=300, patients=60, seed=11, test_eegs=60))
    cwd = os.getcwd()
    os.chdir(store)
    try:
        # The default recipe (schedule, batch-norm momentum, stochastic depth): only sizes are overridden.
        args = [a for a in tiny(root, store, "cv.folds=2", "trainer.epochs=10") if not a.startswith("schedule.")]
        run_cv(compose(args))
    finally:
        os.chdir(cwd)
    run = next(r for r in runs(store)[2] if r.data.tags.get("hms.run_type") == "cv")
    return store, root, run.info.run_id


def data_overrides(root, store):
    return ["data=kaggle", f"data.root={root}", f"data.cache_dir={store}/cache", "data.workers=1", f"tracking.uri=sqlite:///{store}/mlflow.db"]


def test_default_recipe_learns_on_data_it_was_not_tuned_on(learned_run):
    store, root, run_id = learned_run
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    run = client.get_run(run_id)
    metrics = run.data.metrics
    assert metrics["cv_kl"] <= 0.9 * metrics["prior_kl"], metrics
    assert metrics["baseline_kl"] < 0.9 * metrics["prior_kl"], metrics
    assert run.data.tags["hms.learned"] == "true"


def test_submission_of_a_run_has_kaggle_format_and_beats_the_prior(learned_run, tmp_path):
    store, root, run_id = learned_run
    out = tmp_path / "submission.csv"
    done = run_module("hms.predict", "--run", run_id, *data_overrides(root, store), "--out", out)
    assert done.returncode == 0, done.stderr
    submission = pd.read_csv(out)
    assert list(submission.columns) == list(SUBMISSION_COLUMNS)
    assert submission.eeg_id.tolist() == pd.read_csv(root / "sample_submission.csv").eeg_id.tolist()
    probabilities = submission[list(VOTE_COLUMNS)].to_numpy()
    assert np.allclose(probabilities.sum(axis=1), 1, atol=1e-9) and (probabilities > 0).all()
    answers = pd.read_csv(root / "_synthetic" / "test_answers.csv")
    score, prior = kaggle_score(answers, submission), read_meta(root)["test_prior_kl"]
    assert score < prior, f"test KL {score:.4f} is not better than the prior's {prior:.4f}"


def test_exported_models_predict_offline_the_same_submission(learned_run, tmp_path):
    store, root, run_id = learned_run
    folder = tmp_path / "models"
    done = run_module("hms.predict", "export", "--run", run_id, "--to", folder, *data_overrides(root, store))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (folder / run_id).iterdir()) == ["config.yaml", "fold0.weights.h5", "fold1.weights.h5"]
    assert json.loads((folder / "ensemble.json").read_text())["members"][0]["weight"] == 1.0
    online, offline = tmp_path / "online.csv", tmp_path / "offline.csv"
    assert run_module("hms.predict", "--run", run_id, *data_overrides(root, store), "--out", online).returncode == 0
    # No MLflow store at all: the folder is everything a Kaggle notebook has.
    offline_args = [*data_overrides(root, store)[:-1], f"tracking.uri=sqlite:///{tmp_path}/none/mlflow.db"]
    done = run_module("hms.predict", "--models", folder, *offline_args, "--out", offline)
    assert done.returncode == 0, done.stderr
    assert not (tmp_path / "none").exists()
    pd.testing.assert_frame_equal(pd.read_csv(online), pd.read_csv(offline))


def test_ensemble_submission_blends_its_members_submissions(candidate_runs, synthetic_root, tmp_path):
    store, client, same, _ = candidate_runs
    result = run_ensemble(f"sqlite:///{store}/mlflow.db", run_ids=[r.info.run_id for r in same], trials=20)
    exported = load_bundle(export(client, tmp_path / "chosen", ensemble_id=result.run_id))
    chosen = json.loads(Path(client.download_artifacts(result.run_id, "ensemble.json", str(tmp_path))).read_text())["members"]
    assert [(m["run_id"], m["weight"]) for m in exported["members"]] == [(m["run_id"], m["weight"]) for m in chosen]
    # A folder blending all three members (weights edited by hand, as a user may), against each member alone.
    folder, weights = tmp_path / "all", [0.5, 0.3, 0.2]
    for run in same:
        export(client, folder, run_id=run.info.run_id)
    (folder / "ensemble.json").write_text(json.dumps({"format": 1, "blend": "prob", "members": [
        {"run_id": r.info.run_id, "weight": w} for r, w in zip(same, weights)]}))
    cfg = compose(data_overrides(synthetic_root, store))
    blended = predict(load_bundle(folder), cfg)
    alone = [predict(load_bundle(export(client, tmp_path / r.info.run_id, run_id=r.info.run_id)), cfg) for r in same]
    expected = sum(w * a[list(VOTE_COLUMNS)].to_numpy() for w, a in zip(weights, alone))
    assert blended.eeg_id.tolist() == alone[0].eeg_id.tolist() == pd.read_csv(synthetic_root / "test.csv").eeg_id.tolist()
    assert np.allclose(blended[list(VOTE_COLUMNS)].to_numpy(), expected, atol=1e-9)


def test_a_bad_model_folder_is_named(learned_run, tmp_path):
    store, root, run_id = learned_run
    folder = tmp_path / "models"
    done = run_module("hms.predict", "--models", folder, *data_overrides(root, store), "--out", tmp_path / "s.csv")
    assert done.returncode == 2 and f"{folder / 'ensemble.json'}: missing" in done.stderr
    shutil.copytree(export(runs(store)[0], folder, run_id=run_id), tmp_path / "damaged")
    damaged = tmp_path / "damaged" / run_id / "fold1.weights.h5"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    with pytest.raises(PredictError, match=str(damaged)):
        predict(load_bundle(tmp_path / "damaged"), compose(data_overrides(root, store)))
    done = run_module("hms.predict", "--run", "0" * 32, *data_overrides(root, store), "--out", tmp_path / "s.csv")
    assert done.returncode == 2 and "0" * 32 in done.stderr
