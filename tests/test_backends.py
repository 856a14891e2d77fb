"""Both Keras backends (`trainer.backend`): the same CV run under JAX (2 forced host devices, mixed precision) records
what the TensorFlow run (2 logical CPU devices, MirroredStrategy) records; model folders predict across backends both
ways; `trainer.lr_scaling` scales the learning rate by the replicas under both; what JAX cannot run is refused."""


import numpy as np
import pandas as pd
import pytest

from hms.config import ConfigError, compose

from .helpers import run_module

pytestmark = pytest.mark.slow  # trains in fresh processes (a process chooses its backend once, before Keras starts)

RUN = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8",
       "cv.folds=2", "trainer.epochs=1", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null",
       "schedule.steps=[[0,1.0e-3],[0.5,5.0e-4]]", "trainer.cpu_devices=2", "trainer.precision=mixed_float16", "data=kaggle", "data.workers=1"]
ON = {"jax": ["trainer.backend=jax"], "tensorflow": ["trainer.backend=tensorflow", "trainer.strategy=mirrored"]}
# The LR of the last of a fold's 2 steps (20 training rows, batch 16): set mid-epoch, so a trainer that kept its own
# copy of the optimizer's variables through the epoch (Keras on JAX) would still log and use the first step's 1e-3.
BASE_LR = 5.0e-4


def train(root, store, backend, *extra):
    done = run_module("hms.train", *RUN, f"data.root={root}", f"paths.root={store}", *ON[backend], *extra, cwd=store)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def store_client(store):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{store}/mlflow.db")


def cv_run(store):
    client = store_client(store)
    experiment = client.get_experiment_by_name("hms")
    [run] = client.search_runs([experiment.experiment_id], "tags.`hms.run_type` = 'cv'")
    folds = client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}'")
    return client, run, sorted(folds, key=lambda r: r.data.tags["hms.fold"])


@pytest.fixture(scope="module")
def runs(synthetic_root, tmp_path_factory):
    """The same 2-fold run under each backend, each on 2 CPU devices in mixed float16 (linear LR scaling)."""
    out = {}
    for backend in ("jax", "tensorflow"):
        store = tmp_path_factory.mktemp(f"backend-{backend}")
        out[backend] = (store, train(synthetic_root, store, backend))
    return out


def test_a_run_under_jax_records_what_the_tensorflow_run_records(runs):
    records = {}
    for backend, (store, done) in runs.items():
        client, run, folds = cv_run(store)
        assert run.info.status == "FINISHED" and [r.info.status for r in folds] == ["FINISHED", "FINISHED"]
        assert run.data.params["trainer.backend"] == backend
        assert run.data.tags["hms.dtypes"].startswith("compute float16") and run.data.tags["hms.dtypes"].endswith("output float32")
        models = client.search_logged_models([run.info.experiment_id], filter_string=f"tags.`hms.cv_run` = '{run.info.run_id}'")
        records[backend] = {
            "params": set(run.data.params), "metrics": set(run.data.metrics),
            "artifacts": {a.path for a in client.list_artifacts(run.info.run_id)} | {a.path for a in client.list_artifacts(run.info.run_id, "plots")},
            "fold metrics": [set(r.data.metrics) for r in folds], "models": len(models),
            "oof": pd.read_parquet(client.download_artifacts(run.info.run_id, "oof.parquet", str(store))).eeg_id.tolist()}
        assert np.isfinite(run.data.metrics["cv_kl"])
    assert "JAX DataParallel x2 on 2 CPU device(s), mixed_float16" in runs["jax"][1].stdout
    assert "MirroredStrategy x2" in runs["tensorflow"][1].stdout
    assert records["jax"] == records["tensorflow"]
    assert records["jax"]["models"] == 2


def test_the_learning_rate_is_scaled_by_the_replicas_under_both_backends_and_not_with_none(runs, synthetic_root, tmp_path):
    for backend, (store, _) in runs.items():
        client, _, folds = cv_run(store)
        lrs = [m.value for m in client.get_metric_history(folds[0].info.run_id, "lr")]
        assert lrs == pytest.approx([2 * BASE_LR]), backend  # linear: x2 replicas
        plain = tmp_path / backend
        plain.mkdir()
        train(synthetic_root, plain, backend, "trainer.lr_scaling=none", "cv.only=[0]")
        client, _, folds = cv_run(plain)
        assert [m.value for m in client.get_metric_history(folds[0].info.run_id, "lr")] == pytest.approx([BASE_LR]), backend


def test_model_folders_predict_across_backends_both_ways(runs, synthetic_root):
    for trained, (store, _) in runs.items():
        _, run, _ = cv_run(store)
        folder = store / "export"
        done = run_module("hms.predict", "export", "--run", run.info.run_id, "--to", folder, "data=kaggle",
                          f"data.root={synthetic_root}", f"paths.root={store}", cwd=store)
        assert done.returncode == 0, done.stderr[-3000:]
        submissions = {}
        for backend in ("jax", "tensorflow"):
            out = store / f"submission-{backend}.csv"
            done = run_module("hms.predict", "--models", folder, "--out", out, "data=kaggle", f"data.root={synthetic_root}",
                              f"paths.root={store}", f"trainer.backend={backend}", cwd=store)
            assert done.returncode == 0, (trained, backend, done.stderr[-3000:])
            submissions[backend] = pd.read_csv(out)
        assert len(submissions["jax"]) == 8 and (submissions["jax"].eeg_id == submissions["tensorflow"].eeg_id).all()
        probabilities = {b: s.drop(columns="eeg_id").to_numpy() for b, s in submissions.items()}
        np.testing.assert_allclose(probabilities["jax"], probabilities["tensorflow"], atol=1e-4, err_msg=f"trained on {trained}")


@pytest.mark.parametrize("overrides,message", [
    (["trainer.backend=jax", "trainer.strategy=mirrored"], "trainer.strategy=mirrored is TensorFlow's MirroredStrategy"),
    (["trainer.backend=jax", "backbone.source=efficientnet"], "the efficientnet package needs TensorFlow, not trainer.backend=jax"),
    (["trainer.backend=torch"], "trainer.backend='torch' is not one of tensorflow, jax"),
])
def test_what_jax_cannot_run_is_refused_by_name_before_a_run_is_recorded(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose(overrides)
    done = run_module("hms.train", *overrides, f"paths.root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 2 and message.split(",")[0].split(" (")[0] in done.stderr
    assert not (tmp_path / "mlflow.db").exists()
