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


def _schema(database) -> list:
    import sqlite3

    with sqlite3.connect(database) as db:  # each statement's lines sorted: migrations list a table's constraints in any order
        return [(*row[:3], sorted((row[3] or "").replace(",", "").splitlines()))
                for row in db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name != 'marker' ORDER BY name")]


def test_a_fresh_sqlite_store_is_copied_from_the_schema_template_of_this_mlflow_version(tmp_path, monkeypatch):
    """MLflow's migrations take seconds on every fresh SQLite store; hms keeps the empty schema once per MLflow version
    and schema revision and copies it. A copy must be the schema MLflow itself makes, and a template of another
    revision is never used."""
    import sqlite3

    import mlflow
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    from hms import tracking

    cache = tmp_path / "cache"
    monkeypatch.setenv("HMS_SCHEMA_CACHE", str(cache))
    open_store = lambda name: tracking.client_for(OmegaConf.create({"uri": f"sqlite:///{tmp_path}/{name}/mlflow.db"}))  # noqa: E731
    open_store("first")
    [template] = cache.iterdir()
    assert template.name.startswith(f"mlflow-{mlflow.__version__}-schema-")
    with sqlite3.connect(template) as db:  # a mark only a copy of this file can carry
        db.execute("CREATE TABLE marker (x INTEGER)")
    client = open_store("second")
    with sqlite3.connect(tmp_path / "second" / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marker'").fetchone() == (1,)
    (tmp_path / "mlflow").mkdir()
    MlflowClient(f"sqlite:///{tmp_path}/mlflow/mlflow.db").search_experiments()  # the schema as MLflow makes it alone
    assert _schema(tmp_path / "second" / "mlflow.db") == _schema(tmp_path / "mlflow" / "mlflow.db")
    run = client.create_run(tracking.experiment_id(client, "hms")).info.run_id
    client.log_metric(run, "kl", 0.5)
    assert client.get_run(run).data.metrics == {"kl": 0.5}

    with sqlite3.connect(template) as db:  # a template at another schema revision (an older MLflow's)
        db.execute("UPDATE alembic_version SET version_num = 'another'")
    open_store("third")
    with sqlite3.connect(tmp_path / "third" / "mlflow.db") as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'marker'").fetchone() == (0,)
    assert _schema(tmp_path / "third" / "mlflow.db") == _schema(tmp_path / "mlflow" / "mlflow.db")
    with sqlite3.connect(template) as db:  # replaced by this revision's
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() != ("another",)


def test_the_runs_table_address_opens_the_shared_view_on_the_runs_route():
    """MLflow 3.17's UI reads `?viewStateShareKey=` only on the runs route, `#/experiments/<id>/runs`: on the
    experiment's own address the table opens without hms's columns (seen in headless Chromium, tools/screenshots.py,
    which exits when the column is missing). The address names the key of the tag hms writes, and the store's UI."""
    from hms.tracking import SHARED_VIEW_KEY, SHARED_VIEW_TAG, table_address

    assert SHARED_VIEW_TAG == f"mlflow.sharedViewState.{SHARED_VIEW_KEY}"
    assert table_address({"uri": "sqlite:////x/mlflow.db"}, "4") == \
        f"http://127.0.0.1:5000/#/experiments/4/runs?viewStateShareKey={SHARED_VIEW_KEY}&workflowType=machine_learning"
    assert table_address({"uri": "http://server:5001/"}, "2").startswith("http://server:5001/#/experiments/2/runs?")
