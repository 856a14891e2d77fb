"""Seed bags (`cv.seeds`): one CV run per seed on the same folds under one parent run, whose OOF and test predictions
are the seeds' average; vote weights in the loss (`cv.sample_weight`) and the KL a run returns (`cv.score_on=hq`), on
one tiny real run of the raw-EEG CNN."""

import os

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType
from scipy.special import rel_entr

from hms.config import compose
from hms.cv import run_cv
from hms.dataset import PRED_COLUMNS, TARGET_COLUMNS
from hms.inference import export, load_bundle, predict

from .helpers import data_overrides, run_module, tiny

pytestmark = pytest.mark.slow  # trains real models


def _args(root, store, *extra):
    return [a for a in tiny(root, store, "cv.folds=2", "trainer.epochs=1", "input=eeg1d", "backbone=eeg1d_cnn", *extra)
            if not a.startswith(("schedule.", "backbone=efficientnet"))]


@pytest.fixture(scope="module")
def bag(synthetic_root, tmp_path_factory):
    store = tmp_path_factory.mktemp("bag")
    cwd = os.getcwd()
    os.chdir(store)
    try:
        returned = run_cv(compose(_args(synthetic_root, store, "cv.seeds=[0,1]", "cv.sample_weight=10", "cv.score_on=hq")))
    finally:
        os.chdir(cwd)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    found = client.search_runs([experiment], "tags.`hms.run_type` = 'cv'", run_view_type=ViewType.ALL)
    bag_run = next(r for r in found if "hms.seeds" in r.data.tags)
    seeds = sorted((r for r in found if r.data.tags.get("hms.bag") == bag_run.info.run_id), key=lambda r: r.data.tags["hms.seed"])
    return store, client, returned, bag_run, seeds


def _oof(client, run_id, folder):
    return pd.read_parquet(client.download_artifacts(run_id, "oof.parquet", str(folder))).sort_values("eeg_id").reset_index(drop=True)


def test_a_bag_averages_its_seeds_oof_on_the_same_folds_and_records_the_gain(bag, tmp_path):
    store, client, returned, bag_run, seeds = bag
    assert bag_run.info.status == "FINISHED" and [s.data.tags["hms.seed"] for s in seeds] == ["0", "1"]
    assert all(s.data.tags["mlflow.parentRunId"] == bag_run.info.run_id and s.info.status == "FINISHED" for s in seeds)
    frames = [_oof(client, s.info.run_id, tmp_path / s.data.tags["hms.seed"]) for s in seeds]
    assert (frames[0].fold == frames[1].fold).all()  # one fold assignment for every seed
    assert not np.allclose(frames[0][list(PRED_COLUMNS)], frames[1][list(PRED_COLUMNS)])  # the seeds trained differently
    bagged = _oof(client, bag_run.info.run_id, tmp_path / "bag")
    mean = (frames[0][list(PRED_COLUMNS)].to_numpy() + frames[1][list(PRED_COLUMNS)].to_numpy()) / 2
    np.testing.assert_allclose(bagged[list(PRED_COLUMNS)].to_numpy(), mean, rtol=1e-12)
    y = bagged[list(TARGET_COLUMNS)].to_numpy()
    kl = lambda p: rel_entr(y, np.clip(p, 1e-15, 1)).sum(axis=1)  # noqa: E731 - the official metric, independently
    metrics = bag_run.data.metrics
    assert metrics["cv_kl"] == pytest.approx(kl(mean).mean(), rel=1e-9)
    singles = [kl(f[list(PRED_COLUMNS)].to_numpy()).mean() for f in frames]
    assert metrics["seed0_cv_kl"] == pytest.approx(singles[0], rel=1e-9)
    assert metrics["seed_cv_kl_mean"] == pytest.approx(np.mean(singles), rel=1e-9)
    assert metrics["bag_gain"] == pytest.approx(np.mean(singles) - kl(mean).mean(), rel=1e-6)
    # cv.score_on=hq: the run returns the KL on the rows with >= 10 votes; both are logged.
    hq = bagged.total_votes.to_numpy() >= 10
    assert returned == pytest.approx(kl(mean)[hq].mean(), rel=1e-9) == metrics["cv_kl_hq"]
    assert metrics["prior_kl"] == seeds[0].data.metrics["prior_kl"]


def test_each_fold_trained_with_its_rows_vote_weights(bag, tmp_path):
    """cv.sample_weight=10: a training row weighs min(votes, 10), scaled to average 1 over the fold's training rows
    (recorded in fold_rows.parquet from the batches the fold trained on)."""
    store, client, _, bag_run, seeds = bag
    oof = _oof(client, seeds[0].info.run_id, tmp_path / "oof")
    children = client.search_runs([bag_run.info.experiment_id], f"tags.mlflow.parentRunId = '{seeds[0].info.run_id}'")
    for child in children:
        fold = int(child.data.tags["hms.fold"])
        rows = pd.read_parquet(client.download_artifacts(child.info.run_id, "fold_rows.parquet", str(tmp_path / str(fold))))
        train = rows[rows.role == "train"].set_index("eeg_id").weight
        votes = oof[oof.fold != fold].set_index("eeg_id").total_votes.loc[train.index].to_numpy(float)
        np.testing.assert_allclose(train.to_numpy(), np.minimum(votes, 10) / np.minimum(votes, 10).mean(), rtol=1e-6)
        assert (rows[rows.role == "valid"].weight == 1).all()


def test_a_bag_predicts_the_average_of_its_seeds_and_scores_the_test_split(bag, synthetic_root, tmp_path):
    store, client, _, bag_run, seeds = bag
    folder = export(client, tmp_path / "bag", run_id=bag_run.info.run_id)
    bundle = load_bundle(folder)
    # One member, the bag, with every seed's fold models.
    assert [m["run_id"] for m in bundle["members"]] == [bag_run.info.run_id]
    assert sorted(p.name for p in bundle["members"][0]["models"]) == [f"seed{s}-fold{k}.weights.h5" for s in (0, 1) for k in (0, 1)]
    cfg = compose(data_overrides(synthetic_root, store))
    bagged = predict(bundle, cfg)
    alone = [predict(load_bundle(export(client, tmp_path / s.data.tags["hms.seed"], run_id=s.info.run_id)), cfg) for s in seeds]
    columns = [c for c in bagged.columns if c != "eeg_id"]
    np.testing.assert_allclose(bagged[columns].to_numpy(), (alone[0][columns].to_numpy() + alone[1][columns].to_numpy()) / 2,
                               atol=1e-6)
    # A bag is one member of an ensemble like any CV run (here beside its own seed 0, with equal weights).
    from hms.ensembling import run_ensemble

    ensemble = run_ensemble(f"sqlite:///{store}/mlflow.db", run_ids=[bag_run.info.run_id, seeds[0].info.run_id], trials=5,
                            method="equal")
    both = predict(load_bundle(export(client, tmp_path / "ensemble", ensemble_id=ensemble.run_id)), cfg)
    np.testing.assert_allclose(both[columns].to_numpy(), (bagged[columns].to_numpy() + alone[0][columns].to_numpy()) / 2,
                               atol=1e-6)
    # The command scores the submission against the embedded data's answer key and logs it to the run.
    done = run_module("hms.predict", "--run", bag_run.info.run_id, "--out", tmp_path / "sub.csv",
                      *data_overrides(synthetic_root, store), cwd=store)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = pd.read_csv(synthetic_root / "_synthetic" / "test_answers.csv").set_index("eeg_id")
    submission = pd.read_csv(tmp_path / "sub.csv").set_index("eeg_id").loc[answers.index]
    votes = answers.to_numpy(float)
    expected = rel_entr(votes / votes.sum(axis=1, keepdims=True), np.clip(submission[answers.columns].to_numpy(), 1e-15, 1))
    assert f"test_kl {expected.sum(axis=1).mean():.4f}" in done.stdout
    assert client.get_run(bag_run.info.run_id).data.metrics["test_kl"] == pytest.approx(expected.sum(axis=1).mean(), rel=1e-6)
    # A partial key is refused by name, and nothing is written to the run.
    partial = tmp_path / "partial.csv"
    answers.iloc[1:].reset_index().to_csv(partial, index=False)
    done = run_module("hms.predict", "--run", bag_run.info.run_id, "--out", tmp_path / "sub2.csv", "--answers", partial,
                      *data_overrides(synthetic_root, store), cwd=store)
    assert done.returncode == 2 and str(partial) in done.stderr and "partial key" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bag_resumes_keeping_its_finished_seeds(bag, synthetic_root):
    """A bag whose second seed's run did not finish: resume= keeps seed 0 and finishes seed 1's run (its folds were
    recorded, so nothing trains again), then records the bag again."""
    store, client, _, bag_run, seeds = bag
    client.set_terminated(seeds[1].info.run_id, "FAILED")
    client.set_terminated(bag_run.info.run_id, "FAILED")
    done = run_module("hms.train", *_args(synthetic_root, store, f"resume={bag_run.info.run_id}"), cwd=store)
    assert done.returncode == 0, done.stderr[-3000:]
    said = done.stdout + done.stderr
    assert "seed 0: finished earlier" in said and f"seed 1: resuming run {seeds[1].info.run_id}" in said
    assert client.get_run(bag_run.info.run_id).info.status == "FINISHED"
    assert client.get_run(seeds[1].info.run_id).info.status == "FINISHED"
    folds = client.search_runs([bag_run.info.experiment_id], "tags.`hms.run_type` = 'fold'", run_view_type=ViewType.ALL)
    assert len(folds) == 4  # two seeds x two folds, none trained twice
