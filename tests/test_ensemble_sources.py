"""Where an ensemble's candidates come from (`hms.ensemble --study A --study B --top K`), and which rows it fits on
(`--score-on all|hq`). The runs are real MLflow runs in a SQLite store, holding OOF predictions made here with known
scores, so which ones are picked and which wins can be worked out by hand."""

import numpy as np
import pandas as pd
import pytest

from hms import tracking
from hms.dataset import PRED_COLUMNS, TARGET_COLUMNS
from hms.ensembling import EnsembleError, run_ensemble
from hms.metrics import kl_divergence

from .helpers import run_module

ROWS = 120


@pytest.fixture(scope="module")
def rows():
    rng = np.random.default_rng(3)
    y = rng.dirichlet(np.full(6, 0.5), size=ROWS)
    votes = np.where(np.arange(ROWS) % 2 == 0, 12, 3)  # even rows: >= 10 votes
    return pd.DataFrame({"eeg_id": np.arange(ROWS) + 1000, "fold": np.arange(ROWS) % 3, "total_votes": votes,
                         **{c: y[:, i] for i, c in enumerate(TARGET_COLUMNS)}})


def _log_run(client, experiment, rows, p, name, tags, status="FINISHED", score_on="all"):
    oof = rows.copy()
    for i, c in enumerate(PRED_COLUMNS):
        oof[c] = p[:, i]
    run = client.create_run(experiment, run_name=name, tags={"hms.run_type": "cv", **tags}).info.run_id
    y = rows[list(TARGET_COLUMNS)].to_numpy()
    hq = rows.total_votes.to_numpy() >= 10
    client.log_metric(run, "cv_kl", kl_divergence(y, p))
    client.log_metric(run, "cv_kl_hq", kl_divergence(y[hq], p[hq]))
    client.log_param(run, "cv.score_on", score_on)
    tracking.log_frame(client, run, oof, "oof.parquet")
    client.set_terminated(run, status)
    return run


def _noisy(y, amount, seed):
    """Predictions `amount` of the way from the truth to random distributions: more is worse."""
    other = np.random.default_rng(seed).dirichlet(np.ones(6), size=len(y))
    return (1 - amount) * y + amount * other


@pytest.fixture(scope="module")
def store(tmp_path_factory, rows):
    from mlflow import MlflowClient

    folder = tmp_path_factory.mktemp("sources")
    uri = f"sqlite:///{folder}/mlflow.db"
    client = MlflowClient(uri)
    experiment = tracking.experiment_id(client, "hms")
    y = rows[list(TARGET_COLUMNS)].to_numpy()
    made = {}
    # Study "tiles": four finished runs of known quality and a pruned (KILLED) one better than all; study "raw": two.
    for amount, name in [(0.5, "t50"), (0.2, "t20"), (0.35, "t35"), (0.8, "t80")]:
        made[name] = _log_run(client, experiment, rows, _noisy(y, amount, len(made)), name, {"hms.sweep": "tiles"})
    made["t05"] = _log_run(client, experiment, rows, _noisy(y, 0.05, 9), "t05", {"hms.sweep": "tiles"}, status="KILLED")
    for amount, name in [(0.3, "r30"), (0.6, "r60")]:
        made[name] = _log_run(client, experiment, rows, _noisy(y, amount, len(made)), name, {"hms.sweep": "raw"})
    # Not in any study: a run the --study selection must leave out.
    made["alone"] = _log_run(client, experiment, rows, _noisy(y, 0.1, 20), "alone", {})
    return uri, client, made, y


def _members(client, run_id):
    return set(client.get_run(run_id).data.tags["hms.members"].split(","))


def _candidates(client, run_id):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        return set(pd.read_csv(client.download_artifacts(run_id, "candidates.csv", tmp)).run_id)


def test_the_best_k_finished_runs_of_each_study_are_the_candidates(store):
    uri, client, made, _ = store
    result = run_ensemble(uri, studies=["tiles", "raw"], top=2, trials=5, method="equal")
    # Worked out by hand: tiles' best finished are t20 and t35 (t05 was pruned); raw has r30 and r60.
    assert set(result.candidates.run_ids) == {made["t20"], made["t35"], made["r30"], made["r60"]}
    assert _members(client, result.run_id) == set(result.candidates.run_ids)  # equal weights: all of them
    with pytest.raises(EnsembleError, match="'nothing': no finished CV run"):
        run_ensemble(uri, studies=["nothing"], top=2, trials=5)
    with pytest.raises(EnsembleError, match="leave out --runs"):
        run_ensemble(uri, run_ids=[made["alone"]], studies=["tiles"], top=1, trials=5)


def test_the_command_line_takes_studies_and_top(store, tmp_path):
    uri, client, made, _ = store
    done = run_module("hms.ensemble", "--tracking-uri", uri, "--study", "tiles", "--study", "raw", "--top", "1",
                      "--trials", "5", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    ensembles = client.search_runs([client.get_experiment_by_name("hms").experiment_id], "tags.`hms.run_type` = 'ensemble'",
                                   order_by=["attributes.start_time DESC"])
    assert _candidates(client, ensembles[0].info.run_id) == {made["t20"], made["r30"]}


def test_score_on_hq_fits_and_chooses_on_the_rows_with_ten_or_more_votes(tmp_path, rows):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment = tracking.experiment_id(client, "hms")
    y = rows[list(TARGET_COLUMNS)].to_numpy()
    hq = rows.total_votes.to_numpy() >= 10
    # "sharp" is right on the >= 10-vote rows and poor elsewhere; "broad" is the reverse, and better over all rows.
    sharp = np.where(hq[:, None], _noisy(y, 0.05, 1), _noisy(y, 0.9, 2))
    broad = np.where(hq[:, None], _noisy(y, 0.6, 3), _noisy(y, 0.0, 4) * 0.98 + 0.02 / 6)
    assert kl_divergence(y, broad) < kl_divergence(y, sharp) and kl_divergence(y[hq], sharp[hq]) < kl_divergence(y[hq], broad[hq])
    a = _log_run(client, experiment, rows, sharp, "sharp", {}, score_on="hq")
    b = _log_run(client, experiment, rows, broad, "broad", {}, score_on="hq")
    on_hq = run_ensemble(uri, run_ids=[a, b], trials=5, method="best_single")  # the runs' own cv.score_on: hq
    on_all = run_ensemble(uri, run_ids=[a, b], trials=5, method="best_single", score_on="all")
    assert _members(client, on_hq.run_id) == {a} and _members(client, on_all.run_id) == {b}
    assert on_hq.scores["score_on_hq"] == 1 and on_all.scores["score_on_hq"] == 0
    # Both KLs are logged either way.
    assert {"cv_kl", "cv_kl_hq"} <= set(client.get_run(on_hq.run_id).data.metrics)
    c = _log_run(client, experiment, rows, broad, "broad-all", {}, score_on="all")
    with pytest.raises(EnsembleError, match="different rows"):
        run_ensemble(uri, run_ids=[a, c], trials=5)
