"""Real (tiny) Optuna sweeps: each trial a real CV run in a real MLflow store."""

import subprocess
import sys

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient

from hms.search import SpaceError, _counts, check_composes, load_space

from .helpers import chaos, run_module

SPACE = """
study: {study}
direction: minimize
sampler: {{name: random, seed: 0}}
pruner: {pruner}
base: [input=eeg1d, backbone=eeg1d_cnn, trainer.epochs=1, cv.folds=2, "schedule.steps=[[0,1.0e-3]]", trainer.batch_size=16,
       trainer.verbose=0, data.workers=1, tracking.system_metrics=null]
params:
  backbone.dropout: {{type: float, low: 0.0, high: 0.5}}
  augmentation: {{type: categorical, choices: [none, flip]}}
"""


def write_space(folder, name, study, pruner):
    path = folder / f"{name}.yaml"
    path.write_text(SPACE.format(study=study, pruner=pruner))
    return path


def data_overrides(root, store):
    return ["--", "data=kaggle", f"data.root={root}", f"data.cache_dir={store}/cache", f"tracking.uri=sqlite:///{store}/mlflow.db"]


@pytest.mark.parametrize("params,message", [
    ("  trainer.no_such_key: {type: int, low: 1, high: 2}", "params.trainer.no_such_key: trainer.no_such_key=1 does not compose"),
    ("  backbone: {type: categorical, choices: [efficientnet_b0, efficientnet_b9]}", "backbone=efficientnet_b9 does not compose"),
    ("  trainer.precision: {type: categorical, choices: [float32, fp8]}", "trainer.precision=fp8 does not compose"),
    ("  trainer.epochs: {type: int, low: 3, high: 1}", "params.trainer.epochs: needs low < high"),
    ("  schedule.lr: {type: float, low: 0.001, high: 0.1, when: {schedule: cosine}}", "when refers to 'schedule'"),
])
def test_a_bad_space_is_rejected_before_any_training(tmp_path, params, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"study: bad\nparams:\n{params}\n")
    with pytest.raises(SpaceError, match=message.replace("(", r"\(").replace("[", r"\[")):
        check_composes(load_space(path))
    result = run_module("hms.sweep", "launch", path, "--trials", "1", cwd=tmp_path)
    assert result.returncode == 2 and "search space error" in result.stderr
    assert not (tmp_path / "sweeps").exists() and not (tmp_path / "mlflow.db").exists()  # nothing started


def test_shipped_spaces_compose():
    from .helpers import REPO

    for path in sorted((REPO / "sweeps").glob("*.yaml")):
        check_composes(load_space(path))


@pytest.mark.slow
def test_item06_a_killed_worker_is_relaunched_and_the_study_ends_with_exactly_n_trials(synthetic_root, tmp_path):
    """Issue 14, item 6, with real processes: a worker is killed mid-trial; the relaunch (two workers sharing the
    SQLite study) fails that trial by its missing heartbeat, marks its MLflow run FAILED, retries its parameters
    once, and the study ends with exactly 2 complete or pruned trials, none RUNNING, no parameter set twice."""
    import os
    import time

    storage = f"sqlite:///{tmp_path}/study.db"
    space = write_space(tmp_path, "duo", "duo", "{name: threshold, upper: 0.0}")
    launch = ["hms.sweep", "launch", str(space), "--trials", "2", "--storage", storage, "--heartbeat", "1"]
    first = subprocess.Popen([sys.executable, "-m", *launch, *data_overrides(synthetic_root, tmp_path)], cwd=tmp_path,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in first.stdout:  # its trial's CV run is recorded: kill the worker as an OOM killer would
        if line.startswith("MLflow run "):
            break
    first.kill()
    first.wait()
    study = optuna.load_study(study_name="duo", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.RUNNING]
    killed = study.trials[0].params
    time.sleep(4)  # past the grace period: three missed heartbeats

    result = run_module(*launch, "--workers", "2", *data_overrides(synthetic_root, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="duo", storage=storage)
    states = [t.state for t in study.trials]
    counted = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(counted) == 2 and optuna.trial.TrialState.RUNNING not in states, states
    assert states[0] == optuna.trial.TrialState.FAIL
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 2  # no parameter set twice
    assert killed in [t.params for t in counted]  # the killed trial's parameters ran once more, to the end

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    cv_runs = client.search_runs([experiment], "tags.`hms.run_type` = 'cv'")
    dead = [r for r in cv_runs if r.data.tags["hms.trial"] == "0"]
    assert len(dead) == 1 and dead[0].info.status == "FAILED" and "died" in dead[0].data.tags["hms.error"]
    finished = sorted(r.data.tags["hms.trial"] for r in cv_runs if r.data.tags["hms.trial"] != "0")
    assert finished == sorted(str(t.number) for t in counted)  # each counted trial ran exactly once
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")
    sweep = client.search_runs([experiment], "tags.`hms.run_type` = 'sweep'")
    assert len(sweep) == 1 and sweep[0].info.status == "FINISHED"


@pytest.mark.slow
def test_chaos_sweep_workers_killed_and_relaunched_end_with_exactly_the_asked_trials(synthetic_root, tmp_path):
    """Chaos on the trial queue: two `hms.sweep launch --trials 4` workers kept running, SIGKILLed at random moments
    of their trials (the first as a trial's CV run starts) and relaunched at once, a bounded run. The study ends with
    exactly 4 counted trials, no parameter set counted twice, each killed trial FAILED with its parameters run again,
    nothing RUNNING or WAITING; MLflow holds one counted CV run per counted trial, the killed ones FAILED, none
    RUNNING, and one FINISHED sweep run."""
    storage = f"sqlite:///{tmp_path}/study.db"
    space = write_space(tmp_path, "chaos", "chaos", "{name: threshold, upper: 0.0}")  # each trial: 1 fold, then pruned
    codes, kills, launched, output = chaos(
        lambda name: [sys.executable, "-m", "hms.sweep", "launch", str(space), "--trials", "4", "--storage", storage,
                      "--heartbeat", "1", *data_overrides(synthetic_root, tmp_path)],
        "MLflow run ", tmp_path, seed=5, delay=5)
    assert sorted(n for n, c in codes.items() if c != 0) == sorted(kills) and len(kills) >= 2, output[-3000:]

    study = optuna.load_study(study_name="chaos", storage=storage)
    states = [t.state for t in study.trials]
    counted = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)]
    assert len(counted) == 4, states
    assert not {optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING} & set(states), states
    assert len({tuple(sorted(t.params.items())) for t in counted}) == 4  # no parameter set twice
    dead = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL and not t.user_attrs.get("hms.surplus")]
    twins = [t for t in study.trials if t.user_attrs.get("hms.surplus")]  # drew another worker's point: not run
    # Each killed trial's parameters were queued again once (a point whose retry is killed too is given up), and that
    # retry ran to the end unless the study was full before it started (then it stood aside as surplus).
    retries = [t for t in study.trials if "failed_trial" in t.system_attrs]
    originals = [t for t in dead if "failed_trial" not in t.system_attrs]
    assert originals and all(any(r.system_attrs["failed_trial"] == t.number and r.params == t.params for r in retries)
                             for t in originals)
    assert all(_counts(r) or r.user_attrs.get("hms.surplus") or r in dead for r in retries)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")
    cv_runs = client.search_runs([experiment], "tags.`hms.run_type` = 'cv'")
    ran = sorted(int(r.data.tags["hms.trial"]) for r in cv_runs if r.info.status != "FAILED")
    assert ran == sorted(t.number for t in counted)  # each counted trial's CV run exactly once
    assert all(r.info.status == "FAILED" for r in cv_runs if int(r.data.tags["hms.trial"]) in {t.number for t in dead})
    [sweep] = client.search_runs([experiment], "tags.`hms.run_type` = 'sweep'")
    assert sweep.info.status == "FINISHED"
    print(f"chaos: {launched} sweep workers launched, {len(kills)} SIGKILLed, {len(study.trials)} trials "
          f"({len(counted)} counted, {len(dead)} killed, {len(twins)} twins not run), {len(cv_runs)} CV runs, duplicates 0")


@pytest.mark.slow
def test_two_workers_share_a_study_on_postgresql_and_prune_fold_by_fold(synthetic_root, tmp_path):
    """The many-machines path: Optuna workers on one PostgreSQL study (tests/with_postgres.sh starts the server).
    Every trial's first fold exceeds the threshold pruner's upper bound of 0: each is pruned after 1 of its 2 folds,
    and its MLflow records say so."""
    import os

    url = os.environ.get("HMS_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("HMS_TEST_POSTGRES_URL is not set: run the tests as the README says (tests/with_postgres.sh python -m pytest)")
    space = write_space(tmp_path, "pg", "pg_duo", "{name: threshold, upper: 0.0}")
    MlflowClient(f"sqlite:///{tmp_path}/mlflow.db").search_experiments()  # machines share one ready tracking store
    workers = [subprocess.Popen([sys.executable, "-m", "hms.sweep", "launch", str(space), "--trials", "2", "--storage", url,
                                 "--worker", str(k), *data_overrides(synthetic_root, tmp_path)], cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for k in range(2)]
    outputs = [w.communicate(timeout=900)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-2000:] + outputs[1][-2000:]
    study = optuna.load_study(study_name="pg_duo", storage=url)
    assert [t.number for t in study.trials] == [0, 1]  # one trial per worker, as above
    assert all(t.state == optuna.trial.TrialState.PRUNED for t in study.trials)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 2
    assert all(any(f"Trial {t.number} " in out for out in outputs) for t in study.trials)
    assert sum(out.count("Trial ") for out in outputs) == 2  # each trial ran in exactly one worker
    assert all(list(t.intermediate_values) == [0] for t in study.trials)  # pruned after its first fold

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    cv_runs = client.search_runs([experiment], "tags.`hms.run_type` = 'cv'")
    assert sorted(r.data.tags["hms.trial"] for r in cv_runs) == ["0", "1"]
    for run in cv_runs:
        assert run.info.run_name.startswith(f"pg_duo-trial{run.data.tags['hms.trial']}-eeg1d_cnn")  # study and trial in the name
        assert run.data.tags["hms.sweep"] == "pg_duo" and run.data.tags["hms.pruned"] == "true"
        assert run.info.status == "KILLED" and set(run.data.metrics) >= {"fold0_kl"} and "fold1_kl" not in run.data.metrics
        folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
        assert [f.data.tags["hms.fold"] for f in folds] == ["0"]
    sweep_runs = client.search_runs([experiment], "tags.`hms.run_type` = 'sweep'")
    assert len(sweep_runs) == 1 and sweep_runs[0].data.tags["hms.sweep"] == "pg_duo"
    assert all(r.data.tags["mlflow.parentRunId"] == sweep_runs[0].info.run_id for r in cv_runs)  # shown under the sweep

    table = run_module("hms.sweep", "status", "--study", "pg_duo", "--storage", url, cwd=tmp_path)
    assert table.returncode == 0 and table.stdout.count("PRUNED") == 2
    for trial in study.trials:  # each trial's row shows its own run's baselines beside its value
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        row = next(line for line in table.stdout.splitlines() if line.split()[:2] == [str(trial.number), "PRUNED"])
        assert f"{metrics['prior_kl']:.4f}" in row and f"{metrics['baseline_kl']:.4f}" in row


@pytest.mark.slow
def test_default_median_pruner_sees_the_running_mean_of_the_fold_kls(synthetic_root, tmp_path, monkeypatch):
    """No pruner in the space: Optuna's median pruner, 2 startup trials. What each trial reports after each fold is
    the mean KL of its folds so far, read back here from the MLflow fold runs; the third trial is pruned after
    its first fold exactly when that fold is worse than the median of the first two trials' first folds."""
    from hms.search import launch

    path = tmp_path / "median.yaml"
    path.write_text(SPACE.format(study="median", pruner="null").replace("pruner: null\n", ""))
    assert load_space(path).pruner == {"name": "median"}
    storage = f"sqlite:///{tmp_path}/study.db"
    monkeypatch.chdir(tmp_path)
    launch(path, 3, storage, trailing=data_overrides(synthetic_root, tmp_path)[1:])
    study = optuna.load_study(study_name="median", storage=storage)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    fold_kls = []
    for trial in study.trials:
        run_id = trial.user_attrs["mlflow_run_id"]
        folds = {int(r.data.tags["hms.fold"]): r.data.metrics["kl"]
                 for r in client.search_runs([experiment], f"tags.mlflow.parentRunId = '{run_id}'")}
        fold_kls.append([folds[k] for k in sorted(folds)])
        expected = {step: float(np.mean(fold_kls[-1][:step + 1])) for step in range(len(fold_kls[-1]))}
        assert trial.intermediate_values == pytest.approx(expected, abs=1e-12), trial.number
    assert [t.state for t in study.trials[:2]] == [optuna.trial.TrialState.COMPLETE] * 2
    assert [len(f) for f in fold_kls[:2]] == [2, 2]
    median = np.median([fold_kls[0][0], fold_kls[1][0]])
    third = study.trials[2]
    assert (third.state == optuna.trial.TrialState.PRUNED) == (fold_kls[2][0] > median)
    assert len(fold_kls[2]) == (1 if fold_kls[2][0] > median else 2)

    # The sweep's records and reports: its MLflow run, `best` and `status` as the commands print them.
    sweep_runs = client.search_runs([experiment], "tags.`hms.run_type` = 'sweep'")
    assert len(sweep_runs) == 1 and sweep_runs[0].info.status == "FINISHED"
    assert sweep_runs[0].data.metrics["best_value"] == pytest.approx(study.best_value)
    assert "plots/optimization_history.png" in {a.path for a in client.list_artifacts(sweep_runs[0].info.run_id, "plots")}
    best = run_module("hms.sweep", "best", "--study", "median", "--storage", storage, cwd=tmp_path)
    assert best.returncode == 0 and f"best trial {study.best_trial.number}" in best.stdout
    run_id = study.best_trial.user_attrs["mlflow_run_id"]
    assert f"MLflow run: {run_id}" in best.stdout
    assert client.get_run(run_id).data.metrics["cv_kl"] == pytest.approx(study.best_value)
    assert "reproduce: python -m hms.train" in best.stdout and "backbone.dropout=" in best.stdout
    assert "prior_kl" in best.stdout and "baseline_kl" in best.stdout
    table = run_module("hms.sweep", "status", "--study", "median", "--storage", storage, cwd=tmp_path)
    assert table.stdout.count("COMPLETE") == sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials) >= 2
    for trial in study.trials:  # each trial's row shows its own run's baselines beside its value
        metrics = client.get_run(trial.user_attrs["mlflow_run_id"]).data.metrics
        row = next(line for line in table.stdout.splitlines() if line.split()[:2] == [str(trial.number), trial.state.name])
        assert f"{metrics['prior_kl']:.4f}" in row and f"{metrics['baseline_kl']:.4f}" in row


def _study_with_one_trial(tmp_path, name="relaunch"):
    from hms.search import create_study

    space = load_space(write_space(tmp_path, name, name, "{name: none}"))
    storage = f"sqlite:///{tmp_path}/{name}.db"
    study = create_study(space, storage)
    trial = study.ask()
    from hms.search import sample

    sample(trial, space)
    return space, storage, study, trial


def test_item05_a_relaunch_proposes_new_points_not_the_first_launchs_again(tmp_path):
    """Issue 14, item 5: the sampler of a relaunched study is seeded from the study, not the space's seed alone."""
    from hms.search import create_study, sample

    space, storage, study, trial = _study_with_one_trial(tmp_path)
    study.tell(trial, 1.0)
    relaunched = create_study(space, storage)  # a second `hms.sweep launch` of the same space and study
    again = relaunched.ask()
    sample(again, space)
    assert again.params != trial.params
    fresh = create_study(space, f"sqlite:///{tmp_path}/fresh.db", "other")  # a new study with the same seed
    first = fresh.ask()
    sample(first, space)
    assert first.params == trial.params  # still reproducible from the seed


def test_item07_status_works_while_a_trial_is_running(tmp_path):
    """Issue 14, item 7: `hms.sweep status` on a study with a RUNNING trial (no end time, no value)."""
    _, storage, study, trial = _study_with_one_trial(tmp_path, "busy")
    result = run_module("hms.sweep", "status", "--study", "busy", "--storage", storage, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    row = next(line for line in result.stdout.splitlines() if line.split()[:1] == [str(trial.number)])
    assert row.split()[1] == "RUNNING"


@pytest.mark.parametrize("command", ["status", "best"])
def test_item08_09_an_unknown_study_or_storage_is_named_and_nothing_is_created(tmp_path, command):
    """Issue 14, items 8 and 9: a typo in --study says so (exit 2) instead of creating an empty study, and the
    error path itself does not crash."""
    _study_with_one_trial(tmp_path, "real")
    storage = f"sqlite:///{tmp_path}/real.db"
    typo = run_module("hms.sweep", command, "--study", "reall", "--storage", storage, cwd=tmp_path)
    assert typo.returncode == 2 and "study error: no study 'reall'" in typo.stderr and "it holds: real" in typo.stderr
    assert "Traceback" not in typo.stderr
    assert optuna.get_all_study_names(storage) == ["real"]
    missing = run_module("hms.sweep", command, "--study", "real", "--storage", f"sqlite:///{tmp_path}/nothere.db", cwd=tmp_path)
    assert missing.returncode == 2 and "no study storage at" in missing.stderr and not (tmp_path / "nothere.db").exists()


def test_wilcoxon_pruner_pairs_each_fold_with_the_best_trials_fold(tmp_path):
    """pruner: wilcoxon reports each fold's own KL at its fold number; on a real study the pruner stops a trial
    whose folds are each worse than the best trial's same folds once the paired test can say so (4 of 5 folds,
    one-sided p = 1/16 < 0.1), and lets through one that is better on some folds."""
    from hms.search import create_study, report_fold

    path = tmp_path / "w.yaml"
    path.write_text(SPACE.format(study="w", pruner="{name: wilcoxon, p_threshold: 0.1, n_startup_steps: 0}"))
    space = load_space(path)
    study = create_study(space, f"sqlite:///{tmp_path}/w.db")
    assert isinstance(study.pruner, optuna.pruners.WilcoxonPruner)
    best = [0.60, 0.70, 0.65, 0.72, 0.68]

    def run(fold_kls):
        trial, folds = study.ask(), []
        for fold, kl in enumerate(fold_kls):
            folds.append(kl)
            if report_fold(trial, "wilcoxon", folds, fold):
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return trial.number, len(folds)
        study.tell(trial, float(np.mean(fold_kls)))
        return trial.number, len(folds)

    first, done = run(best)
    assert done == 5 and study.trials[first].intermediate_values == dict(enumerate(best))
    worse, done = run([k + 0.1 for k in best])
    assert study.trials[worse].state == optuna.trial.TrialState.PRUNED and done == 4
    mixed, done = run([0.55, 0.75, 0.60, 0.80, 0.66])  # better on three folds: no evidence it is worse
    assert study.trials[mixed].state == optuna.trial.TrialState.COMPLETE and done == 5


@pytest.mark.slow  # trains real trials and kills a worker
def test_a_relaunch_at_once_waits_for_the_killed_trial_and_ends_with_exactly_the_asked_trials(synthetic_root, tmp_path):
    """Issue 26, item 5, as a user does it, with the default heartbeat: a 2-trial sweep SIGKILLed during trial 1 and
    relaunched at once with --trials 3. The relaunch used to exit 0 with the dead trial and 3 MLflow runs still
    RUNNING (its 1-epoch trials ended inside the 60 s grace period); it must wait for the dead trial's heartbeat
    to lapse, retry it, and leave nothing RUNNING."""
    import os

    storage = f"sqlite:///{tmp_path}/study.db"
    space = write_space(tmp_path, "again", "again", "{name: none}")
    launch = ["hms.sweep", "launch", str(space), "--storage", storage]
    first = subprocess.Popen([sys.executable, "-m", *launch, "--trials", "2", *data_overrides(synthetic_root, tmp_path)],
                             cwd=tmp_path, env={**os.environ, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    started = 0
    for line in first.stdout:
        started += line.startswith("MLflow run ")
        if started == 2:  # trial 1's CV run is recorded
            break
    first.kill()
    first.wait()
    result = run_module(*launch, "--trials", "3", *data_overrides(synthetic_root, tmp_path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    study = optuna.load_study(study_name="again", storage=storage)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states, states
    assert sum(s == optuna.trial.TrialState.COMPLETE for s in states) == 3
    assert states[1] == optuna.trial.TrialState.FAIL  # the killed one, whose parameters ran again
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    assert not client.search_runs([experiment], "attributes.status = 'RUNNING'")
    dead = client.search_runs([experiment], "tags.`hms.trial` = '1' and tags.`hms.run_type` = 'cv'")
    assert [r.info.status for r in dead] == ["FAILED"]
    sweep = client.search_runs([experiment], "tags.`hms.run_type` = 'sweep'")
    assert [r.info.status for r in sweep] == ["FINISHED"]
