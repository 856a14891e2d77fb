"""Ensembles over real tiny CV runs in a real MLflow store (the blend functions themselves: test_blending.py)."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hms.config import compose
from hms.constants import VOTE_COLUMNS
from hms.ensembling import EnsembleError, run_ensemble
from hms.metrics import kl_divergence
from hms.inference import export, load_bundle, predict
from hms.cv import run_cv

from .helpers import SAME_FOLDS, data_overrides, run_module, runs, tiny

@pytest.fixture(scope="session")
def candidate_runs(synthetic_root, tmp_path_factory):
    """Three tiny 2-fold runs over the same samples and folds (different inputs), and a finished CV run over other
    rows and 3 folds (recorded as such a run would be: tags, cv.folds param, an oof.parquet of its own)."""
    from hms import tracking

    store = tmp_path_factory.mktemp("ensemble")
    cwd = os.getcwd()
    os.chdir(store)
    try:
        for extra in (["input.mix=both", "augmentation=hemisphere"], ["input.mix=eeg", "augmentation=flip"],
                      ["input.mix=kaggle", "augmentation=none"]):
            run_cv(compose(tiny(synthetic_root, store, "cv.folds=2", *extra)))
        client, experiment, all_runs = runs(store)
        first = next(r for r in all_runs if r.data.tags.get("hms.run_type") == "cv")
        oof = oof_of(client, first.info.run_id, store).reset_index(drop=True)
        oof = oof.iloc[: 2 * len(oof) // 3].assign(fold=lambda f: np.arange(len(f)) % 3)  # other rows, other folds
        run = client.create_run(experiment.experiment_id, run_name="three-folds", tags={"hms.run_type": "cv"})
        client.log_param(run.info.run_id, "cv.folds", "3")
        tracking.log_frame(client, run.info.run_id, oof, "oof.parquet")
        client.set_terminated(run.info.run_id, "FINISHED")
    finally:
        os.chdir(cwd)
    client, _, all_runs = runs(store)
    cv = [r for r in all_runs if r.data.tags.get("hms.run_type") == "cv"]
    same = sorted((r for r in cv if r.data.params["cv.folds"] == "2"), key=lambda r: r.info.run_id)
    other = next(r for r in cv if r.data.params["cv.folds"] == "3")
    return store, client, same, other


def oof_of(client, run_id, folder):
    return pd.read_parquet(client.download_artifacts(run_id, "oof.parquet", str(folder))).sort_values("eeg_id")


@pytest.mark.slow
def test_ensemble_command_beats_its_best_member_and_records_everything(candidate_runs, tmp_path):
    store, client, same, _ = candidate_runs
    uri = f"sqlite:///{store}/mlflow.db"
    done = run_module("hms.ensemble", "--tracking-uri", uri, "--filter", SAME_FOLDS, "--trials", "60", "--register", "hms-ens",
                      cwd=store)
    assert done.returncode == 0, done.stderr
    ensemble = next(r for r in runs(store)[2] if r.data.tags.get("hms.run_type") == "ensemble")
    assert ensemble.info.status == "FINISHED" and ensemble.info.run_id in done.stdout
    oofs = {r.info.run_id: oof_of(client, r.info.run_id, tmp_path) for r in same}
    member_kl = {run_id: kl_divergence(o.filter(like="y_").to_numpy(), o.filter(like="p_").to_numpy()) for run_id, o in oofs.items()}
    metrics = ensemble.data.metrics
    assert metrics["cv_kl"] <= min(member_kl.values()) + 1e-6  # never worse than its best member (rows renormalised)
    assert metrics["best_single_kl"] == pytest.approx(min(member_kl.values()), abs=1e-6)
    for key in ("cv_kl_hq", "cv_kl_nested", "equal_kl", "greedy_kl", "best_single_kl_nested", "equal_kl_nested", "greedy_kl_nested"):
        assert np.isfinite(metrics[key]), key
    assert metrics["greedy_kl"] <= metrics["best_single_kl"] + 1e-12
    # ensemble.json, recomputed here from the members' own oof.parquet files: the logged cv_kl is that blend's KL.
    bundle = json.loads(open(client.download_artifacts(ensemble.info.run_id, "ensemble.json", str(tmp_path))).read())
    weights = {m["run_id"]: m["weight"] for m in bundle["members"]}
    assert bundle["blend"] == "prob" and set(weights) <= set(oofs) and sum(weights.values()) == pytest.approx(1)
    assert ensemble.data.tags["hms.members"].split(",") == [m["run_id"] for m in bundle["members"]]
    blended = sum(w * oofs[r].filter(like="p_").to_numpy() for r, w in weights.items())
    blended /= blended.sum(axis=1, keepdims=True)  # float32 softmax rows sum to 1 only nearly
    y = next(iter(oofs.values())).filter(like="y_").to_numpy()
    assert metrics["cv_kl"] == pytest.approx(kl_divergence(y, blended), abs=1e-9)
    assert all(m["choices"]["input.mix"] in ("both", "eeg", "kaggle") for m in bundle["members"])
    # Beside the ensemble: the members' own prior_kl and the best of their baseline_kl, from their runs.
    members = [client.get_run(r).data.metrics for r in weights]
    assert metrics["baseline_kl"] == pytest.approx(min(m["baseline_kl"] for m in members))
    assert metrics["prior_kl"] == pytest.approx(min(m["prior_kl"] for m in members))
    assert f"best member baseline_kl {metrics['baseline_kl']:.4f}" in done.stdout
    artifacts = {a.path for a in client.list_artifacts(ensemble.info.run_id)}
    assert {"ensemble.json", "candidates.csv", "oof.parquet", "plots", "logs"} <= artifacts
    # --register: the ensemble's model folder is version 1 of the registered model, the same members and weights.
    from hms.inference import FOLDER_MODEL, export_logged_models, resolve_model_uri

    assert ensemble.data.tags["hms.registered"] == "models:/hms-ens/1" and "models:/hms-ens/1" in done.stdout
    assert resolve_model_uri(client, "models:/hms-ens/1").model_type == FOLDER_MODEL
    registered = load_bundle(export_logged_models(client, tmp_path / "registered", ["models:/hms-ens/1"]))
    assert [(m["run_id"], m["weight"]) for m in registered["members"]] == [(m["run_id"], m["weight"]) for m in bundle["members"]]
    log_file = client.list_artifacts(ensemble.info.run_id, "logs")[0].path
    assert "ensemble cv_kl" in open(client.download_artifacts(ensemble.info.run_id, log_file, str(tmp_path))).read()
    assert {a.path for a in client.list_artifacts(ensemble.info.run_id, "plots")} == {
        "plots/weights.png", "plots/candidates_vs_ensemble.png"}


@pytest.mark.slow
def test_log_space_blend_is_a_normalised_geometric_mean(candidate_runs, tmp_path):
    store, client, same, _ = candidate_runs
    result = run_ensemble(f"sqlite:///{store}/mlflow.db", run_ids=[r.info.run_id for r in same], trials=30, mode="log")
    p = np.stack([oof_of(client, r.info.run_id, tmp_path).filter(like="p_").to_numpy() for r in same])
    geometric = np.exp(np.tensordot(result.weights, np.log(np.maximum(p, 1e-15)), axes=1))  # the metric's clip
    geometric /= geometric.sum(axis=1, keepdims=True)
    assert result.scores["cv_kl"] == pytest.approx(kl_divergence(result.candidates.y, geometric), abs=1e-9)
    assert result.scores["cv_kl"] <= min(kl_divergence(result.candidates.y, q) for q in p) + 1e-6  # rows renormalised
    assert client.get_run(result.run_id).data.params["blend"] == "log"


@pytest.mark.slow
def test_a_mismatched_run_is_rejected_by_name(candidate_runs):
    store, _, same, other = candidate_runs
    uri = f"sqlite:///{store}/mlflow.db"
    # Every finished CV run of the experiment: the 3-fold run covers other rows and folds.
    done = run_module("hms.ensemble", "--tracking-uri", uri, "--trials", "5", cwd=store)
    assert done.returncode == 2
    assert other.info.run_id in done.stderr and "does not match" in done.stderr and "eeg_ids" in done.stderr
    with pytest.raises(EnsembleError, match=other.info.run_id):
        run_ensemble(uri, run_ids=[same[0].info.run_id, other.info.run_id], trials=5)
    fold_run = next(r for r in runs(store)[2] if r.data.tags.get("hms.run_type") == "fold")
    with pytest.raises(EnsembleError, match=f"{fold_run.info.run_id}.*not a finished CV run"):
        run_ensemble(uri, run_ids=[same[0].info.run_id, fold_run.info.run_id], trials=5)


@pytest.mark.slow
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
