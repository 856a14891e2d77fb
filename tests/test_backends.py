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


@pytest.fixture(scope="module")
def killed_jax_run(synthetic_root, tmp_path_factory):
    """A JAX run with `trainer.lr_scaling=none`, killed (SIGKILL) the moment fold 1 starts: fold 0 is finished."""
    import os
    import signal
    import subprocess
    import sys

    store = tmp_path_factory.mktemp("killed-jax")
    process = subprocess.Popen([sys.executable, "-m", "hms.train", *RUN, f"data.root={synthetic_root}", f"paths.root={store}",
                                *ON["jax"], "trainer.lr_scaling=none"], cwd=store, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    output = []
    for line in process.stdout:
        output.append(line)
        if line.startswith("fold 1: training"):
            break
    assert process.poll() is None, "".join(output)[-3000:]
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    return store


def fold0_lrs(store) -> list[float]:
    client, _, folds = cv_run(store)
    [fold0] = [r for r in folds if r.data.tags["hms.fold"] == "0" and r.info.status == "FINISHED"]
    return [m.value for m in client.get_metric_history(fold0.info.run_id, "lr")]


def test_the_learning_rate_is_scaled_by_the_replicas_under_both_backends_and_not_with_none(runs, killed_jax_run, synthetic_root,
                                                                                         tmp_path):
    for backend, (store, _) in runs.items():
        assert fold0_lrs(store) == pytest.approx([2 * BASE_LR]), backend  # linear: x2 replicas
    assert fold0_lrs(killed_jax_run) == pytest.approx([BASE_LR])  # none, under JAX (fold 0 finished before the kill)
    train(synthetic_root, tmp_path, "tensorflow", "trainer.lr_scaling=none", "cv.only=[0]")
    assert fold0_lrs(tmp_path) == pytest.approx([BASE_LR])  # none, under TensorFlow


PREDICT_BOTH = """
import sys
from hms.predict import main
backend, root, store, *folders = sys.argv[1:]
for folder in folders:  # each trained backend's folder, predicted in this process's backend
    code = main(["--models", folder, "--out", f"{folder}/submission-{backend}.csv", "data=kaggle", f"data.root={root}",
                 f"paths.root={store}", f"trainer.backend={backend}"])
    assert code in (0, None), (folder, code)
"""


def test_model_folders_predict_across_backends_both_ways(runs, synthetic_root):
    """Each run's exported folder predicts under JAX and under TensorFlow, the same probabilities both ways (one
    process per predicting backend: a process chooses its backend once)."""
    import subprocess
    import sys

    from hms.inference import export

    folders = {}
    for trained, (store, _) in runs.items():
        client, run, _ = cv_run(store)
        folders[trained] = export(client, store / "export", run_id=run.info.run_id)
    for backend in ("jax", "tensorflow"):
        done = subprocess.run([sys.executable, "-c", PREDICT_BOTH, backend, str(synthetic_root), str(runs[backend][0]),
                               *map(str, folders.values())], capture_output=True, text=True, timeout=600, cwd=runs[backend][0])
        assert done.returncode == 0, (backend, done.stderr[-3000:])
    for trained, folder in folders.items():
        submissions = {backend: pd.read_csv(folder / f"submission-{backend}.csv") for backend in ("jax", "tensorflow")}
        assert len(submissions["jax"]) == 8 and (submissions["jax"].eeg_id == submissions["tensorflow"].eeg_id).all()
        probabilities = {b: s.drop(columns="eeg_id").to_numpy() for b, s in submissions.items()}
        np.testing.assert_allclose(probabilities["jax"], probabilities["tensorflow"], atol=1e-4, err_msg=f"trained on {trained}")


@pytest.mark.parametrize("overrides,message", [
    (["trainer.backend=jax", "trainer.strategy=mirrored"], "trainer.strategy=mirrored is TensorFlow's MirroredStrategy"),
    (["trainer.backend=jax", "backbone.source=efficientnet"], "the efficientnet package needs TensorFlow, not trainer.backend=jax"),
    (["trainer.backend=torch"], "trainer.backend='torch' is not one of tensorflow, jax"),
    (["trainer.backend=tensorflow", "trainer.distributed.enabled=true"], "trainer.distributed.enabled=true needs trainer.backend=jax"),
    (["trainer.backend=jax", "trainer.distributed.enabled=true", "cv.workers=2"], "trainer.distributed.enabled=true spreads one fold"),
])
def test_what_jax_cannot_run_is_refused_by_name_before_a_run_is_recorded(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        compose(overrides)
    done = run_module("hms.train", *overrides, f"paths.root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 2 and message.split(",")[0].split(" (")[0] in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


def test_a_backend_that_is_not_installed_is_refused_by_name_before_a_run_is_recorded(tmp_path):
    """As in an install without the `jax` extra: Python's own way of making a module unimportable
    (`sys.modules[name] = None`) hides JAX from the process, which then starts `hms.train` as `-m` would."""
    import subprocess
    import sys

    start = "import runpy, sys; sys.modules['jax'] = None; runpy.run_module('hms.train', run_name='__main__')"
    done = subprocess.run([sys.executable, "-c", start, "trainer.backend=jax", f"paths.root={tmp_path}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'trainer.backend=jax: jax is not installed (pip install -e ".[jax]")' in done.stderr
    assert not (tmp_path / "mlflow.db").exists()


# A mixed_float16 model on inputs whose first batch-norm sees a variance far beyond float16's largest value (65504):
# one training step under loss scaling, then the recalibration hms runs after training, over a batch whose activations
# overflow float16 in some channels (inf/NaN statistics, once averaged in, made a saved model predict NaN).
FLOAT16 = """
import json, sys
import numpy as np
from hms import backends
from hms.config import compose
cfg = compose(["input=eeg1d", "backbone=eeg1d_cnn", "input.signal.rate=20", "input.signal.high=8", f"trainer.backend={sys.argv[1]}"])
backends.select(cfg.trainer)
import keras
from hms.cv import _compile
from hms.devices import precision_policy
from hms.metrics import kl_loss
from hms.models import batch_norm_layers, recalibrate_batch_norm
from hms.representations import model_for
with precision_policy("mixed_float16"):
    model = model_for(cfg)
    _compile(model, 1e-3)
rng = np.random.default_rng(0)
x = (rng.normal(size=(16, *model.inputs[0].shape[1:])) * 2000).astype("float32")
y = rng.dirichlet(np.ones(6), size=16).astype("float32")
loss = model.train_on_batch(x, y)
recalibrate_batch_norm(model, [(x, y), (x * 25, y)])  # the second batch's activations overflow float16 in places
out = model(x, training=False)
variances = [keras.ops.convert_to_numpy(layer.moving_variance) for layer in batch_norm_layers(model)]
print(json.dumps({"loss": float(np.asarray(loss).ravel()[0]), "loss_dtype": str(keras.ops.convert_to_numpy(kl_loss(y, out)).dtype),
                  "output_dtype": str(keras.ops.convert_to_numpy(out).dtype), "finite_output": bool(np.isfinite(keras.ops.convert_to_numpy(out)).all()),
                  "scaled": isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer), "compute": model.layers[2].compute_dtype,
                  "finite_variances": all(bool(np.isfinite(v).all()) for v in variances),
                  "largest_variance": max(float(v.max()) for v in variances)}))
"""


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_float16_keeps_the_softmax_loss_and_batch_norm_statistics_in_float32(backend, tmp_path):
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", FLOAT16, backend], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["compute"] == "float16" and seen["scaled"], seen
    assert seen["output_dtype"] == "float32" and seen["loss_dtype"] == "float32" and seen["finite_output"], seen
    assert seen["finite_variances"] and seen["largest_variance"] > 65504, seen  # beyond float16, kept in float32
    assert np.isfinite(seen["loss"]), seen


REPLICAS = """
import json, sys
import numpy as np
from hms.devices import split_cpu
split_cpu(2)
import keras
import tensorflow as tf
from hms.devices import optimizer_for, precision_policy
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with precision_policy("mixed_float16"), strategy.scope():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(6), keras.layers.Activation("linear", dtype="float32")])
    model.compile(optimizer=optimizer_for(model, 1e-3), loss="mse")
rng = np.random.default_rng(0)
x = rng.normal(size=(8, 16)).astype("float32")
x[4:] *= 3000  # the second replica's half of the batch: its scaled gradients overflow float16, the first's do not
y = rng.normal(size=(8, 6)).astype("float32")
before = model.get_weights()
model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
print(json.dumps({"finite": all(bool(np.isfinite(w).all()) for w in model.get_weights()),
                  "unchanged": all(np.array_equal(a, b) for a, b in zip(before, model.get_weights())),
                  "scale": float(keras.ops.convert_to_numpy(model.optimizer.dynamic_scale))}))
"""


def test_a_float16_step_is_skipped_when_any_replicas_gradients_overflow(tmp_path):
    """Under a MirroredStrategy each replica checks its own scaled gradients; Keras' loss-scale optimizer applied
    the step on the first replica's verdict, summing the other's inf into the weights (a run's fold then predicted
    NaN). The step must be skipped and the loss scale halved."""
    import json
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", REPLICAS], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen == {"finite": True, "unchanged": True, "scale": 2.0 ** 14}, seen  # Keras starts the scale at 2**15


def test_a_jax_run_killed_mid_fold_resumes_on_jax_from_its_own_config(killed_jax_run):
    """Resume under JAX: the run was killed (SIGKILL) the moment fold 1 started; `resume=` alone, with no backend
    given, continues it on the backend the run recorded, keeping fold 0."""
    import os

    store = killed_jax_run
    client, run, folds = cv_run(store)
    kept = [r.info.run_id for r in folds if r.data.tags["hms.fold"] == "0" and r.info.status == "FINISHED"]
    assert len(kept) == 1 and run.data.params["trainer.backend"] == "jax"

    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    done = run_module("hms.train", f"resume={run.info.run_id}", f"paths.root={store}", cwd=store, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "fold 0: finished earlier, kept" in done.stdout and "JAX DataParallel x2" in done.stdout
    client, run, folds = cv_run(store)
    assert run.info.status == "FINISHED" and np.isfinite(run.data.metrics["cv_kl"])
    assert sorted((r.data.tags["hms.fold"], r.info.status) for r in folds) == [("0", "FINISHED"), ("1", "FAILED"), ("1", "FINISHED")]
    assert [r.info.run_id for r in folds if r.data.tags["hms.fold"] == "0"] == kept  # not retrained


def test_a_sweep_runs_its_trials_on_jax(synthetic_root, tmp_path):
    import optuna

    space = tmp_path / "jax.yaml"
    base = ", ".join(f'"{o}"' for o in [*RUN, *ON["jax"]] if not o.startswith("trainer.cpu_devices"))
    space.write_text(f"study: jaxsweep\ndirection: minimize\nsampler: {{name: random, seed: 0}}\nbase: [{base}]\n"
                     "params:\n  backbone.dropout: {type: float, low: 0.0, high: 0.5}\n")
    storage = f"sqlite:///{tmp_path}/study.db"
    done = run_module("hms.sweep", "launch", space, "--trials", "2", "--storage", storage, "--", "data=kaggle", "cv.only=[0]",
                      f"data.root={synthetic_root}", f"paths.root={tmp_path}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="jaxsweep", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    client = store_client(tmp_path)
    experiment = client.get_experiment_by_name("hms").experiment_id
    trials = client.search_runs([experiment], "tags.`hms.run_type` = 'cv'")
    assert len(trials) == 2 and {r.data.params["trainer.backend"] for r in trials} == {"jax"}
    assert sorted(r.data.metrics["cv_kl"] for r in trials) == pytest.approx(sorted(t.value for t in study.trials))


COMPILE = """
import json, sys
from hms import backends
from hms.config import compose
backends.select(compose(["trainer.backend=jax", f"trainer.compile_cache={sys.argv[1]}"]).trainer)
import jax, jax.numpy as jnp
hits = []
jax.monitoring.register_event_listener(lambda event, **kw: hits.append(event) if "cache_hits" in event else None)
print(json.dumps({"value": float(jax.jit(lambda x: jnp.tanh(x @ x.T).sum())(jnp.ones((64, 64)))), "hits": len(hits)}))
"""


def test_jax_keeps_compiled_programs_for_the_next_process_and_null_turns_it_off(tmp_path):
    """`trainer.compile_cache`: under JAX, XLA's compiled programs go to the folder and a later process of the same
    program loads them (JAX's own cache-hit event) with the same result; null keeps nothing."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}

    def run(setting):
        done = subprocess.run([sys.executable, "-c", COMPILE, setting], capture_output=True, text=True, timeout=300, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    import json

    cache = tmp_path / "xla"
    first, second = run(str(cache)), run(str(cache))
    assert first["hits"] == 0 and second["hits"] >= 1 and second["value"] == first["value"]
    assert any(cache.iterdir())
    off = tmp_path / "off"
    env["XDG_CACHE_HOME"] = str(off)  # where auto would put it
    assert run("null")["hits"] == 0 and not off.exists()
    assert run("auto")["hits"] == 0 and any((off / "hms" / "xla").iterdir())
