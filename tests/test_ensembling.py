"""Ensembles over real tiny CV runs in a real MLflow store; blending and weight fitting on arrays."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hms.config import compose
from hms.constants import VOTE_COLUMNS
from hms.blending import blend, fit_best_single, fit_equal, fit_greedy, fit_optuna, nested_predictions
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
                      ["input.mix=kaggle", "augmentation=none", "trainer.epochs=3"]):
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


def test_blend_modes_and_weight_fitting_on_arrays():
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(6), 200)
    noisy = lambda scale: np.clip(y + rng.normal(0, scale, y.shape), 1e-3, None)  # noqa: E731
    p = np.stack([q / q.sum(axis=1, keepdims=True) for q in (noisy(0.1), noisy(0.1), noisy(0.4))])
    assert np.allclose(blend(p, [1, 1, 1]), p.mean(axis=0))
    assert np.allclose(blend(p, [0, 2, 0], "log"), p[1])
    best = fit_best_single(p, y)
    assert best.tolist() == [0, 1, 0] or best.tolist() == [1, 0, 0]
    greedy = fit_greedy(p, y)
    assert kl_divergence(y, blend(p, greedy)) < kl_divergence(y, blend(p, best))  # two independent errors average out
    assert greedy[0] > 0 and greedy[1] > 0 and greedy.sum() == pytest.approx(1)
    assert (fit_greedy(p, y, max_members=1) > 0).sum() == 1
    optuna_w = fit_optuna(p, y, trials=40, max_members=2)
    assert (optuna_w > 0).sum() <= 2 and kl_divergence(y, blend(p, optuna_w)) <= kl_divergence(y, blend(p, best)) + 1e-12
    assert np.allclose(fit_equal(p), 1 / 3)


def test_nested_estimate_uses_weights_fitted_on_the_other_folds():
    # Run 0 is right on fold 0 and on 5 rows of fold 1, run 1 on fold 1 only: run 0 is the best single run
    # in-sample. Nested, fold 0 is blended by what fold 1 prefers (run 1) and fold 1 by what fold 0 prefers (run 0).
    y = np.tile(np.eye(6)[0], (40, 1))
    folds = np.repeat([0, 1], 20)
    good, bad = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]), np.array([0.1, 0.18, 0.18, 0.18, 0.18, 0.18])
    right = [np.arange(40) < 25, folds == 1]
    p = np.stack([np.where(r[:, None], good, bad) for r in right])
    assert fit_best_single(p, y).tolist() == [1, 0]
    nested = nested_predictions(fit_best_single, p, y, folds)
    assert np.allclose(nested[folds == 0], p[1, folds == 0]) and np.allclose(nested[folds == 1], p[0, folds == 1])
    assert kl_divergence(y, nested) > kl_divergence(y, p[0])


def test_log_blend_uses_its_weights():
    # Two rows, two runs with unequal weights 1 and 3: the weighted geometric mean, renormalised, by hand.
    a = np.array([[0.5, 0.1, 0.1, 0.1, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2, 0.1, 0.1]])
    b = np.array([[0.1, 0.5, 0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.2, 0.2, 0.2]])
    expected = a ** 0.25 * b ** 0.75
    expected /= expected.sum(axis=1, keepdims=True)
    assert np.allclose(blend(np.stack([a, b]), [1, 3], "log"), expected)
    assert np.allclose(blend(np.stack([a, b]), [1, 3], "prob"), 0.25 * a + 0.75 * b)
    assert not np.allclose(blend(np.stack([a, b]), [1, 3], "log"), blend(np.stack([a, b]), [1, 1], "log"))


def mirrored_runs(n=40):
    """Two runs that err on opposite halves of the rows, as mirror images: by symmetry and convexity of the
    KL in the blend weight, the equal blend is the best blend, strictly better than either run or a 2:1 mix."""
    y = np.tile(np.eye(6)[0], (n, 1))
    good, bad = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02]), np.array([0.1, 0.18, 0.18, 0.18, 0.18, 0.18])
    first = np.arange(n) < n // 2
    return np.stack([np.where(first[:, None], good, bad), np.where(first[:, None], bad, good)]), y


def test_greedy_keeps_its_best_prefix_not_its_last_step():
    p, y = mirrored_runs()
    # Step 1 takes either run, step 2 the other (the equal blend, the best), step 3 must add a third pick: 2:1.
    assert kl_divergence(y, blend(p, [1, 1])) < kl_divergence(y, blend(p, [2, 1])) < kl_divergence(y, p[0])
    assert np.allclose(fit_greedy(p, y, steps=3), [0.5, 0.5])


def test_optuna_blend_starts_from_the_best_single_run_and_equal_weights():
    # Run 2 is much the best; with only the two warm-start trials the best single run must be found.
    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(6), 100)
    p = np.stack([rng.dirichlet(np.ones(6), 100), rng.dirichlet(np.ones(6), 100), 0.9 * y + 0.1 / 6])
    assert np.allclose(fit_optuna(p, y, trials=2), [0, 0, 1])
    assert np.allclose(fit_optuna(p[::-1], y, trials=2), [1, 0, 0])  # the best single run first: only it is used
    mirrored, truth = mirrored_runs()
    assert np.allclose(fit_optuna(mirrored, truth, trials=2), [0.5, 0.5])  # the second warm start: equal weights


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


def test_evaluate_scores_each_method_in_sample_and_nested_and_times_it():
    import dataclasses

    from hms.blending import MethodResult, evaluate

    rng = np.random.default_rng(5)
    y = rng.dirichlet(np.ones(6), 60)
    p = np.stack([rng.dirichlet(np.ones(6), 60) for _ in range(3)])
    folds = np.arange(60) % 3
    results = evaluate(p, y, folds, "prob", {"equal": (fit_equal, {}), "best_single": (fit_best_single, {})})
    assert list(results) == ["equal", "best_single"]
    for name, fit in (("equal", fit_equal), ("best_single", fit_best_single)):
        result = results[name]
        w = fit(p, y)
        assert np.allclose(result.weights, w) and result.kl == pytest.approx(kl_divergence(y, blend(p, w)), abs=1e-12)
        assert result.nested_kl == pytest.approx(kl_divergence(y, nested_predictions(fit, p, y, folds)), abs=1e-12)
        assert 0 <= result.seconds < 0.5  # a fit of milliseconds, timed as a difference of clock readings
    with pytest.raises(dataclasses.FrozenInstanceError):
        results["equal"].kl = 0.0  # a method's result is a record, not a scratch pad
    assert isinstance(results["equal"], MethodResult)


def test_a_blend_mode_that_does_not_exist_is_refused_and_optuna_weights_stay_on_the_simplex():
    rng = np.random.default_rng(6)
    y = rng.dirichlet(np.ones(6), 50)
    p = np.stack([rng.dirichlet(np.ones(6), 50) for _ in range(4)])
    for mode in ("geometric", "abc", "zzz"):  # modes sorting before and after "log" and "prob": matched by name, not order
        with pytest.raises(ValueError, match="blend mode must be one of"):
            blend(p, [1, 1, 1, 1], mode)
    w = fit_optuna(p, y, trials=30, seed=1)
    assert (w >= 0).all() and w.sum() == pytest.approx(1)
    one = fit_optuna(p, y, trials=30, max_members=1, seed=2)
    assert (one > 0).sum() == 1 and one.max() == pytest.approx(1)


def test_nested_estimate_with_three_folds_fits_each_fold_on_the_two_others():
    # Run k is right on fold k only, and wrong in its own way elsewhere. Nested, a fold's rows are blended with the
    # run that is best on the other two folds (never the fold's own run), so each fold shows another run's mistake.
    y = np.tile(np.eye(6)[0], (30, 1))
    folds = np.repeat([0, 1, 2], 10)
    good = np.array([0.9, 0.02, 0.02, 0.02, 0.02, 0.02])
    bad = [np.array([0.2 - 0.05 * k, 0.2 + 0.05 * k, 0.15, 0.15, 0.15, 0.15]) for k in range(3)]  # run 0 the least wrong
    p = np.stack([np.where((folds == k)[:, None], good, bad[k] / bad[k].sum()) for k in range(3)])
    nested = nested_predictions(fit_best_single, p, y, folds)
    for fold in range(3):
        others = folds != fold
        best_elsewhere = int(np.argmin([kl_divergence(y[others], q[others]) for q in p]))  # worked out here
        assert best_elsewhere != fold
        np.testing.assert_allclose(nested[folds == fold], p[best_elsewhere, folds == fold])


def test_greedy_returns_the_best_single_run_when_no_blend_beats_it():
    # Run 0 is close to the votes, runs 1 and 2 are noise: every blend with them is worse, so greedy's best prefix is
    # run 0 alone (a step that scored blends by the wrong weights would still pair it with another run).
    rng = np.random.default_rng(7)
    y = rng.dirichlet(np.ones(6), 80)
    p = np.stack([0.95 * y + 0.05 / 6, rng.dirichlet(np.ones(6), 80), rng.dirichlet(np.ones(6), 80)])
    assert kl_divergence(y, p[0]) < min(kl_divergence(y, blend(p, w)) for w in ([1, 1, 0], [1, 0, 1], [2, 1, 0]))
    assert np.allclose(fit_greedy(p, y), [1, 0, 0])
