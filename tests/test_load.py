"""Issue 28, item 4: many runs writing to one store at once, as on a cluster. Eight real `hms.train` processes on one
SQLite file, and eight real sweep workers on PostgreSQL (tracking store and study) sharing one feature cache: every
run finishes with whole records, no database error is printed, and the sweep runs exactly the trials it was asked for.
`benchmarks/concurrent_runs.py` times 1, 2, 4 and 8 runs at once with the same helpers."""

import os
import subprocess
import sys

import optuna
import pandas as pd
import pytest

from .helpers import ONE_THREAD, STORE_ERRORS, Load, concurrent_runs, fresh_postgres_database, store_problems

pytestmark = pytest.mark.slow  # eight training processes at once, twice

RUNS = 8
SPACE = """
study: load
sampler: {name: random, seed: 0}
pruner: {name: none}
base: [input=eeg1d, backbone=eeg1d_cnn, augmentation=signal, input.signal.rate=20, input.signal.high=8, trainer.epochs=1,
       cv.folds=2, "schedule.steps=[[0,1.0e-3]]", trainer.batch_size=16, trainer.verbose=0, data.workers=1,
       tracking.system_metrics=null]
params:
  backbone.dropout: {type: float, low: 0.0, high: 0.5}
"""


def postgres_server() -> str:
    url = os.environ.get("HMS_TEST_POSTGRES_URL")
    if not url:
        pytest.fail("HMS_TEST_POSTGRES_URL is not set: run the tests as the README says (tests/with_postgres.sh python -m pytest)")
    return url


def test_eight_runs_at_once_on_one_sqlite_store(synthetic_root, tmp_path):
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"  # a fresh file: all eight find it missing at once
    load = concurrent_runs(RUNS, uri, synthetic_root, tmp_path / "cache", tmp_path / "runs")
    assert load.codes == [0] * RUNS, "\n".join(out[-1500:] for out, code in zip(load.outputs, load.codes) if code)
    assert load.errors == 0, [line for out in load.outputs for line in out.splitlines() if any(e in line for e in STORE_ERRORS)][:5]
    assert store_problems(uri, RUNS, folds=2) == []


def test_eight_sweep_workers_on_postgresql_share_a_cache_and_run_exactly_the_asked_trials(synthetic_root, tmp_path):
    server = postgres_server()
    tracking = fresh_postgres_database(server, f"hms_load_tracking_{os.getpid()}")  # fresh: the workers make its schema
    study = fresh_postgres_database(server, f"hms_load_study_{os.getpid()}")
    space = tmp_path / "load.yaml"
    space.write_text(SPACE)
    cache = tmp_path / "cache"
    workers = [subprocess.Popen([sys.executable, "-m", "hms.sweep", "launch", str(space), "--trials", str(RUNS), "--storage", study,
                                 "--worker", str(k), "--", "data=kaggle", f"data.root={synthetic_root}", f"data.cache_dir={cache}",
                                 f"tracking.uri={tracking}", f"paths.root={tmp_path}"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, env={**os.environ, **ONE_THREAD}) for k in range(RUNS)]
    load = Load([w.wait(timeout=900) for w in workers], [w.stdout.read() for w in workers])
    assert load.codes == [0] * RUNS, "\n".join(out[-1500:] for out, code in zip(load.outputs, load.codes) if code)
    assert load.errors == 0, [line for out in load.outputs for line in out.splitlines() if any(e in line for e in STORE_ERRORS)][:5]

    trials = optuna.load_study(study_name="load", storage=study).trials
    assert [t.number for t in trials] == list(range(RUNS))  # exactly the asked trials, none twice, none extra
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert store_problems(tracking, RUNS, folds=2) == []
    # One feature cache for all eight, each file's chunks read and stored once (a second builder waits for the first).
    [folder] = cache.glob("train-eeg-files-*")
    chunks = pd.concat([pd.read_parquet(p) for p in folder.glob("part-*.parquet")])
    assert sorted(chunks.file_id.unique()) == sorted(int(p.stem) for p in (synthetic_root / "train_eegs").glob("*.parquet"))
    assert not chunks.duplicated(["file_id", "chunk"]).any(), "files built more than once"
