"""hms.tracking against a real MLflow store shared by real processes."""

import multiprocessing

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # 4 spawned processes

ROUNDS = 12


def _log_rounds(uri, experiment_id, barrier, errors):
    from mlflow import MlflowClient

    from hms.tracking import log_dataset

    client = MlflowClient(uri)
    run_id = client.create_run(experiment_id).info.run_id
    frame = pd.DataFrame({"eeg_id": [1, 2, 3], "y": [0.1, 0.2, 0.3]})
    try:
        for k in range(ROUNDS):
            barrier.wait(timeout=120)  # every process logs the same new dataset at the same moment
            log_dataset(client, run_id, frame, f"set{k}", "/data", f"digest{k}", "training")
    except Exception as error:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(error).__name__}: {error}"[:500])
        barrier.abort()
    client.set_terminated(run_id)


def test_runs_logging_the_same_new_dataset_at_once_all_record_it(tmp_path):
    """Two CV runs that start together on one store log the same training set: MLflow looks a dataset up and then
    inserts it, so the slower insert fails on the unique key (seen in CI). Each run must still record the dataset,
    and the store hold it once."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("hms")
    context = multiprocessing.get_context("spawn")
    barrier, errors = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_log_rounds, args=(uri, experiment_id, barrier, errors)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert errors.empty(), errors.get()
    assert [w.exitcode for w in workers] == [0] * 4
    runs = client.search_runs([experiment_id])
    assert len(runs) == 4
    for run in runs:
        assert sorted(d.dataset.name for d in run.inputs.dataset_inputs) == sorted(f"set{k}" for k in range(ROUNDS))
    import sqlite3

    with sqlite3.connect(tmp_path / "mlflow.db") as db:
        assert db.execute("select count(*), count(distinct name) from datasets").fetchone() == (ROUNDS, ROUNDS)
