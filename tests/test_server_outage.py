"""Issue 28, item 2: the MLflow tracking server goes away mid-run, for longer than MLflow's HTTP retries last (here cut
to about 3 s with MLFLOW_HTTP_REQUEST_MAX_RETRIES=2). A real `mlflow server`, stopped while fold 1 trains and
started again on the same store (2 folds: fold 1, the last, finishes while the server is away). The run stops with an error that names the server; the fold it finished meanwhile
waits in the spool and, on `resume=`, is recorded from there (same run, same OOF), not trained again."""

import os
import subprocess
import sys
import time

import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.entities import ViewType

from .helpers import end_process_group, free_port, mlflow_server, tiny

pytestmark = pytest.mark.slow  # a real server, a real run


def test_a_fold_finished_while_the_server_is_away_is_kept_and_recorded_on_resume(synthetic_root, tmp_path):
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    args = [a for a in tiny(synthetic_root, tmp_path, "cv.folds=2", "trainer.epochs=2", "schedule.steps=[[0,1.0e-3]]",
                            "input=eeg1d", "backbone=eeg1d_cnn", f"tracking.uri={uri}")
            if not a.startswith(("backbone=efficientnet", "tracking.uri=sqlite"))]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    server = mlflow_server(tmp_path, port)
    try:
        run = subprocess.Popen([sys.executable, "-m", "hms.train", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        seen = []
        for line in run.stdout:
            seen.append(line)
            if line.startswith("fold 1: training"):
                break
        child = seen[-1].split("MLflow run ")[1].split(")")[0].split(",")[0]
        for _ in range(600):  # fold 1's rows are recorded before it trains: stop the server once they are there
            if list((tmp_path / "server-artifacts").glob(f"*/{child}/artifacts/fold_rows.parquet")):
                break
            time.sleep(0.05)
        end_process_group(server)  # while fold 1 trains: its epochs, then its records, find no server
        rest = run.communicate(timeout=300)[0]
        said = "".join(seen) + rest
        assert run.returncode == 1, said[-3000:]
        assert f"tracking store {uri} did not answer after 2 retries" in rest and "Traceback" not in rest
        spooled = tmp_path / "spool"
        folders = list(spooled.glob("*/fold1"))
        assert len(folders) == 1 and (folders[0] / "record.json").is_file(), list(spooled.rglob("*"))
        spooled_oof = pd.read_parquet(folders[0] / "oof_fold.parquet")
        parent_id = folders[0].parent.name
        assert f"resume={parent_id}" in rest
        server = mlflow_server(tmp_path, port)
        done = subprocess.run([sys.executable, "-m", "hms.train", f"resume={parent_id}", f"tracking.uri={uri}"], cwd=tmp_path,
                              env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "fold 1: finished but not recorded (the tracking store was away or full); recording it from" in done.stdout + done.stderr
        client = MlflowClient(uri)
        assert client.get_run(parent_id).info.status == "FINISHED"
        folds = client.search_runs([client.get_run(parent_id).info.experiment_id], "tags.`hms.run_type` = 'fold'",
                                   run_view_type=ViewType.ALL)
        # Fold 1 was recorded from the spool, not trained again: one run per fold.
        assert sorted((r.data.tags["hms.fold"], r.info.status) for r in folds) == [("0", "FINISHED"), ("1", "FINISHED")]
        fold1 = next(r for r in folds if r.data.tags["hms.fold"] == "1")
        recorded = pd.read_parquet(client.download_artifacts(fold1.info.run_id, "oof_fold.parquet", str(tmp_path)))
        pd.testing.assert_frame_equal(recorded, spooled_oof)
        assert not list(spooled.glob("*/fold*"))  # recorded, so gone from the spool
    finally:
        if server.poll() is None:
            end_process_group(server)
