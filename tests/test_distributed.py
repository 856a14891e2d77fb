"""One fold over the devices of two processes (`trainer.distributed`, JAX's `jax.distributed` on loopback, one CPU
device each): it trains what one process with two devices trains, and only process 0 records."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from .helpers import free_port, run_module

pytestmark = pytest.mark.slow  # three JAX processes

RUN = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8", "cv.folds=2",
       "cv.only=[0]", "trainer.epochs=1", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null", "data=kaggle",
       "data.workers=1", "trainer.backend=jax", "trainer.bn_recalibrate=false"]


def store_records(store):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("hms").experiment_id
    runs = client.search_runs([experiment])
    [parent] = [r for r in runs if r.data.tags.get("hms.run_type") == "cv"]
    oof = pd.read_parquet(client.download_artifacts(parent.info.run_id, "oof.parquet", str(store))).sort_values("eeg_id")
    return runs, parent, oof


def test_one_fold_over_two_processes_trains_what_one_process_with_two_devices_trains(synthetic_root, tmp_path):
    single, spread = tmp_path / "single", tmp_path / "spread"
    single.mkdir(), spread.mkdir()
    done = run_module("hms.train", *RUN, f"data.root={synthetic_root}", f"paths.root={single}", "trainer.cpu_devices=2", cwd=single)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "JAX DataParallel x2 on 2 CPU device(s), float32" in done.stdout

    port = free_port()
    processes = [subprocess.Popen([sys.executable, "-m", "hms.train", *RUN, f"data.root={synthetic_root}", f"paths.root={spread}",
                                   "trainer.distributed.enabled=true", f"trainer.distributed.coordinator=127.0.0.1:{port}",
                                   "trainer.distributed.processes=2", f"trainer.distributed.process_id={k}"],
                                  cwd=spread, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  env={**os.environ, "TMPDIR": str(tmp_path)})
                 for k in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    assert "DataParallel x2 on 2 CPU device(s) of 2 processes (this one 0)" in outputs[0]
    assert "process 1 of 2: process 0 records the run" in outputs[1]

    runs, parent, oof = store_records(spread)
    assert len(runs) == 2 and parent.info.status == "FINISHED"  # the parent and its one fold, recorded once
    assert parent.data.params["trainer.distributed.processes"] == "2"
    _, _, alone = store_records(single)
    assert oof.eeg_id.tolist() == alone.eeg_id.tolist()
    np.testing.assert_allclose(oof.filter(like="p_").to_numpy(), alone.filter(like="p_").to_numpy(), atol=1e-6)
    assert not list(tmp_path.glob("hms-process1-*"))  # process 1's scratch store is gone
