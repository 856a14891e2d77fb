"""A run's folds trained by worker processes (`cv.workers`, `join=`), claimed from an Optuna queue: real processes,
real kills, a real MLflow store and study storage."""

import os
import signal
import subprocess
import sys
import threading

import numpy as np
import optuna
import pandas as pd
import pytest
from mlflow import MlflowClient

from .helpers import LOAD_RUN, REPO, chaos, run_module

pytestmark = pytest.mark.slow  # trains in several processes

RUN = LOAD_RUN  # the tiny 1D CNN, 2 folds, 1 epoch


def command(root, store, *extra):
    return [*RUN, f"data.root={root}", f"paths.root={store}", *extra]


def store_runs(store):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    [parent] = client.search_runs([experiment], "tags.`hms.run_type` = 'cv'")
    folds = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return client, parent, sorted(folds, key=lambda r: (r.data.tags["hms.fold"], r.info.status))


def oof(client, run, store):
    return pd.read_parquet(client.download_artifacts(run.info.run_id, "oof.parquet", str(store))).sort_values("eeg_id")


def queue_trials(store, parent):
    storage = f"sqlite:///{store.resolve()}/sweeps/folds.db"
    return optuna.load_study(study_name=parent.data.tags["hms.fold_queue"], storage=storage).trials


@pytest.fixture(scope="module")
def sequential(synthetic_root, tmp_path_factory):
    """The run in one process, with each worker's share of the cores (the parallel workers' thread count)."""
    store = tmp_path_factory.mktemp("sequential")
    threads = str(max(1, (os.cpu_count() or 1) // 2))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": "1"}
    done = run_module("hms.train", *command(synthetic_root, store), cwd=store, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return store


def test_two_fold_workers_record_what_the_sequential_run_records(sequential, synthetic_root, tmp_path):
    done = run_module("hms.train", *command(synthetic_root, tmp_path, "cv.workers=2"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {}
    for name, store in (("sequential", sequential), ("parallel", tmp_path)):
        client, parent, folds = store_runs(store)
        assert parent.info.status == "FINISHED" and [r.info.status for r in folds] == ["FINISHED", "FINISHED"]
        models = client.search_logged_models([parent.info.experiment_id], filter_string=f"tags.`hms.cv_run` = '{parent.info.run_id}'")
        records[name] = {
            "metrics": {k: round(v, 3) for k, v in parent.data.metrics.items()},
            "tags": {k: v for k, v in parent.data.tags.items() if k in ("hms.learned", "hms.dtypes")},
            "params": {k for k in parent.data.params},
            "artifacts": {a.path for a in client.list_artifacts(parent.info.run_id)} | {a.path for a in client.list_artifacts(parent.info.run_id, "plots")}
            | {a.path for a in client.list_artifacts(parent.info.run_id, "models")},
            "fold metrics": [set(r.data.metrics) for r in folds], "models": len(models), "oof": oof(client, parent, store)}
    # The same rows, folds and targets; probabilities as close as two sequential runs with these threads are (equal).
    a, b = records["sequential"].pop("oof"), records["parallel"].pop("oof")
    assert a.eeg_id.tolist() == b.eeg_id.tolist() and a.fold.tolist() == b.fold.tolist()
    np.testing.assert_allclose(a.filter(like="p_").to_numpy(), b.filter(like="p_").to_numpy(), atol=1e-5)
    assert records["sequential"] == records["parallel"]
    assert records["parallel"]["models"] == 2
    client, parent, folds = store_runs(tmp_path)
    assert {r.data.tags["hms.worker"] for r in folds} == {"0", "1"}  # the two folds went to different workers
    assert [t.state for t in queue_trials(tmp_path, parent)] == [optuna.trial.TrialState.COMPLETE] * 3  # 2 folds, finish

    # A worker that joins the finished run trains nothing and changes nothing.
    joined = run_module("hms.train", f"join={parent.info.run_id}", f"paths.root={tmp_path}", cwd=tmp_path)
    assert joined.returncode == 0, joined.stderr[-3000:]
    assert "nothing left to train" in joined.stdout
    client, after, folds_after = store_runs(tmp_path)
    assert [r.info.run_id for r in folds_after] == [r.info.run_id for r in folds] and after.data.metrics == parent.data.metrics


def test_chaos_fold_workers_killed_and_relaunched_train_every_fold_exactly_once(synthetic_root, tmp_path):
    """Chaos on the fold queue, as a cluster treats workers: a 4-fold run queued with no launcher, two `join=` workers
    kept running (each killed one is relaunched at once, as a job array's retry would), SIGKILLs at random moments
    (the first the instant a fold starts, so a fold run is surely left mid-way), a bounded run. Every fold ends with
    exactly one FINISHED run; each killed fold run is FAILED with the reason; the queue holds one COMPLETE trial per
    fold and nothing RUNNING; the run is scored over every fold; no MLflow run is RUNNING."""
    done = run_module("hms.train", *command(synthetic_root, tmp_path, "cv.folds=4", "cv.workers=2", "cv.launcher=none",
                                            "cv.heartbeat=1"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = store_runs(tmp_path)[1].info.run_id
    codes, kills, launched, output = chaos(
        lambda name: [sys.executable, "-m", "hms.train", f"join={run_id}", f"paths.root={tmp_path}"],
        ": training (MLflow run", tmp_path, seed=26)
    assert sorted(n for n, c in codes.items() if c != 0) == sorted(kills), output[-3000:]
    assert len(kills) >= 2, output[-3000:]

    client, parent, folds = store_runs(tmp_path)
    assert parent.info.status == "FINISHED" and np.isfinite(parent.data.metrics["cv_kl"])
    finished = [r.data.tags["hms.fold"] for r in folds if r.info.status == "FINISHED"]
    assert sorted(finished) == ["0", "1", "2", "3"], output[-3000:]  # every fold once: none twice, none missing
    failed = [r for r in folds if r.info.status == "FAILED"]
    assert failed and all("died" in r.data.tags["hms.error"] for r in failed)
    assert not client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")
    trials = queue_trials(tmp_path, parent)
    complete = sorted(t.system_attrs["fixed_params"]["fold"] for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert complete == [-1, 0, 1, 2, 3]
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    assert sorted(oof(client, parent, tmp_path).fold.unique()) == [0, 1, 2, 3]
    print(f"chaos: {launched} workers launched, {len(kills)} SIGKILLed, 4 folds, {len(folds)} fold runs "
          f"({len(finished)} FINISHED, {len(failed)} FAILED), queue trials {len(trials)}, duplicates 0")


def test_a_fold_whose_worker_stopped_after_finishing_it_is_kept_not_trained_again(synthetic_root, tmp_path):
    """The worker of fold 0 is frozen (SIGSTOP) the moment it reports the fold's KL: its fold run is FINISHED but the
    queue was never told. Its heartbeat lapses, the other worker reaps the claim, finds the FINISHED run and keeps it:
    fold 0 is trained once and has one FINISHED run (two would leave the run unscorable)."""
    process = subprocess.Popen([sys.executable, "-m", "hms.train", *command(synthetic_root, tmp_path, "cv.workers=2", "cv.heartbeat=1")],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output, pids, frozen, killed = [], {}, None, False
    for line in process.stdout:
        output.append(line)
        if ": training (MLflow run" in line:
            pids[line.split(":")[0]] = int(line.rsplit("pid ", 1)[1].rstrip(")\n"))
        if line.startswith("fold 0: KL") and frozen is None:
            frozen = pids["fold 0"]
            os.kill(frozen, signal.SIGSTOP)
            watchdog = threading.Timer(120, lambda: subprocess.run(["kill", "-9", str(frozen)], capture_output=True))
            watchdog.start()  # should the run never be scored, the frozen worker still ends and so does the test
        if line.startswith("cv_kl ") and not killed:  # the other worker scored the run; the frozen one dies now
            watchdog.cancel()
            os.kill(frozen, signal.SIGKILL)
            killed = True
    assert process.wait(timeout=600) == 0, "".join(output)[-3000:]
    text = "".join(output)
    assert text.count("fold 0: training (MLflow run") == 1 and "fold 0: finished by a worker that died" in text, text[-3000:]
    client, parent, folds = store_runs(tmp_path)
    assert parent.info.status == "FINISHED" and np.isfinite(parent.data.metrics["cv_kl"])
    assert [(r.data.tags["hms.fold"], r.info.status) for r in folds] == [("0", "FINISHED"), ("1", "FINISHED")]
    assert not client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")


def test_join_is_refused_for_a_run_without_a_fold_queue(sequential):
    client, parent, _ = store_runs(sequential)
    done = run_module("hms.train", f"join={parent.info.run_id}", f"paths.root={sequential}", cwd=sequential)
    assert done.returncode == 2 and "was not started with cv.workers > 1" in done.stderr, done.stderr[-2000:]


def test_submitit_runs_the_fold_workers_as_one_job_array(synthetic_root, tmp_path):
    """`cv.launcher=submitit`: the workers are one submitit job array (here its local executor, the one submitit
    uses where there is no `srun`), each job running `hms.train join=<run>`; they finish the run, each fold once."""
    done = run_module("hms.train", *command(synthetic_root, tmp_path, "cv.workers=2", "cv.launcher=submitit",
                                            "cv.submitit.cluster=local"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted 2 fold workers to local" in done.stdout
    client, parent, folds = store_runs(tmp_path)
    assert parent.info.status == "FINISHED" and np.isfinite(parent.data.metrics["cv_kl"])
    assert [(r.data.tags["hms.fold"], r.info.status) for r in folds] == [("0", "FINISHED"), ("1", "FINISHED")]
    assert {r.data.tags["hms.worker"] for r in folds} <= {"0", "1"}
    logs = sorted((tmp_path / "submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and all("Job completed successfully" in p.read_text() for p in logs)
    assert sum(p.read_text().count("no fold left") for p in logs) == 2  # each job ran a worker to the end
    assert not client.search_runs([parent.info.experiment_id], "attributes.status = 'RUNNING'")


def test_a_launcher_that_is_not_known_is_refused_before_any_run(tmp_path):
    done = run_module("hms.train", "cv.workers=2", "cv.launcher=ray", "cv.submitit.timeout_min=0", f"paths.root={tmp_path}",
                      cwd=tmp_path)
    assert done.returncode == 2
    assert "cv.launcher='ray' is not one of local, submitit, none" in done.stderr and "cv.submitit.timeout_min=0" in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_workers_started_elsewhere_as_the_kubernetes_indexed_job_runs_them_finish_a_run_queued_with_no_launcher(synthetic_root, tmp_path):
    """`cv.launcher=none` records the run, queues its folds and starts nothing; then two processes run the container
    command of deploy/kubernetes/fold-workers.yaml (its args, with this test's stores and data), each with the
    JOB_COMPLETION_INDEX Kubernetes gives pod k, as ssh/tmux or a `sbatch --array` would run them too."""
    import re

    import yaml

    queue = f"sqlite:///{tmp_path}/queue.db"
    tracking = f"sqlite:///{tmp_path}/mlflow.db"
    done = run_module("hms.train", *command(synthetic_root, tmp_path, "cv.workers=2", "cv.launcher=none", f"cv.queue={queue}"),
                      cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client, parent, folds = store_runs(tmp_path)
    assert parent.info.status == "RUNNING" and not folds  # queued, nothing trained yet
    run_id = parent.info.run_id
    assert f"python -m hms.train join={run_id} cv.queue={queue}" in done.stdout

    job = yaml.safe_load((REPO / "deploy" / "kubernetes" / "fold-workers.yaml").read_text())
    spec = job["spec"]["template"]["spec"]["containers"][0]
    assert job["spec"]["completionMode"] == "Indexed" and spec["command"] == ["python", "-m", "hms.train"]
    values = {"RUN_ID": run_id, "TRACKING_URI": tracking, "QUEUE_URI": queue}
    args = [re.sub(r"\$\((\w+)\)", lambda m: values[m.group(1)], a) for a in spec["args"]]
    args = [a for a in args if not a.startswith(("data.root=", "data.cache_dir="))] + [f"data.root={synthetic_root}"]
    pods = [subprocess.Popen([sys.executable, "-m", "hms.train", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, env={**os.environ, "JOB_COMPLETION_INDEX": str(k)})
            for k in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in pods]
    assert [p.returncode for p in pods] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    client, parent, folds = store_runs(tmp_path)
    assert parent.info.status == "FINISHED" and np.isfinite(parent.data.metrics["cv_kl"])
    assert [(r.data.tags["hms.fold"], r.info.status) for r in folds] == [("0", "FINISHED"), ("1", "FINISHED")]
    assert {r.data.tags["hms.worker"] for r in folds} <= {"0", "1"}
