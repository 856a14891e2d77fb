"""Issue 28, item 3, during training: a run whose spool or artifact store fills up ends with an error naming the path
and the bytes it needs, leaves no half-written file behind, marks its runs FAILED (none RUNNING), and `resume=`
finishes it once there is room, recording a fold that was spooled instead of training it again.

The filesystems are real and small: tmpfs mounts in a private user and mount namespace (`unshare --user --map-root-user
--mount`, as an unprivileged user can on Linux), over the store's `spool/` and `mlruns/` folders. The database and the
data stay on the ordinary disk. Mounts last as long as the namespace, so one driver inside it runs the three commands
and reports what each left."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # trains three times in fresh processes

RUN = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8",
       "cv.folds=2", "trainer.epochs=1", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null",
       "data=kaggle", "data.workers=1"]

DRIVER = r"""
import json, re, subprocess, sys
from pathlib import Path
from mlflow import MlflowClient

store, root, run = Path(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
command = [sys.executable, "-m", "hms.train", f"data.root={root}", f"paths.root={store}"]

def mount(folder, size, again=False):
    (store / folder).mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", ("remount," if again else "") + f"size={size}", "tmpfs", str(store / folder)], check=True)

def phase(*overrides):
    done = subprocess.run([*command, *overrides], capture_output=True, text=True, cwd=store)
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("hms").experiment_id]) if (store / "mlflow.db").exists() else []
    files = {str(p.relative_to(store)): p.stat().st_size for folder in ("spool", "mlruns") for p in (store / folder).rglob("*")
             if p.is_file()}
    models = client.search_logged_models([runs[0].info.experiment_id]) if runs else []
    return {"rc": done.returncode, "output": done.stdout + done.stderr, "files": files,
            "runs": [[r.data.tags.get("hms.fold", "cv"), r.info.status] for r in runs],
            "models": {m.model_id: [m.tags.get("hms.fold"), str(m.status).split(".")[-1]] for m in models}}

out = []
mount("spool", "1m")    # the fold's 5 MB weights do not fit
mount("mlruns", "18m")  # 5 MB weights: fold 0's twice (the CV run's copy and its logged model's), fold 1's once
out.append(phase(*run))
run_id = re.search(r"MLflow run (\w+)", out[0]["output"]).group(1)
mount("spool", "64m", again=True)
out.append(phase(f"resume={run_id}"))
mount("mlruns", "64m", again=True)
out.append(phase(f"resume={run_id}"))
print(json.dumps({"run_id": run_id, "phases": out}))
"""


def test_a_run_that_fills_its_spool_then_its_artifact_store_says_where_keeps_nothing_partial_and_resumes(synthetic_root, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", sys.executable, "-c", DRIVER, str(store),
                           str(synthetic_root), json.dumps(RUN)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    run_id, (spool_full, store_full, resumed) = report["run_id"], report["phases"]

    # 1. The spool (1 MiB) cannot hold fold 0's records: the error names the fold's spool folder and what it needs.
    text = spool_full["output"]
    assert spool_full["rc"] == 1 and "Traceback" not in text, text[-3000:]
    said = [line for line in text.splitlines() if line.startswith("disk full: ")]
    assert len(said) == 1 and said[0].startswith(f"disk full: {store}/spool/{run_id}/fold0: no room for fold 0's records: it needs "), text[-3000:]
    needed = int(said[0].split("it needs ")[1].split(" bytes")[0].replace(",", ""))
    assert f"resume={run_id}" in text
    assert not [f for f in spool_full["files"] if f.startswith("spool/")], spool_full["files"]  # no partial fold left
    assert sorted(spool_full["runs"]) == [["0", "FAILED"], ["cv", "FAILED"]]  # nothing left RUNNING

    # 2. Resumed with room in the spool: fold 0 trains again and is recorded; fold 1's weights reach the CV run, but
    # its logged model's copy does not fit in mlruns/.
    text = store_full["output"]
    assert store_full["rc"] == 1 and "Traceback" not in text, text[-3000:]
    spooled = store_full["files"].get(f"spool/{run_id}/fold1/model/fold1.weights.h5")
    assert spooled, store_full["files"]  # kept whole in the spool, to be recorded from there
    [failed] = [m for m, (fold, status) in store_full["models"].items() if status == "FAILED"]
    assert sorted(store_full["models"].values()) == [["0", "READY"], ["1", "FAILED"]], store_full["models"]
    said = [line for line in text.splitlines() if line.startswith("disk full: ")]
    assert len(said) == 1 and said[0].startswith(f"disk full: {store}/mlruns/models/{failed}/artifacts: no room for logged "
                                                 f"model {failed} (No space left on device): it needs "), text[-3000:]
    # the model's folder: its weights and config.yaml, as the spool holds them
    assert int(said[0].split("it needs ")[1].split(" bytes")[0].replace(",", "")) == \
        spooled + store_full["files"][f"spool/{run_id}/fold1/model/config.yaml"]
    assert not [f for f in store_full["files"] if f.startswith(f"mlruns/models/{failed}/")], store_full["files"]  # nothing half copied
    [ready] = [m for m, (fold, status) in store_full["models"].items() if status == "READY"]
    assert store_full["files"][f"mlruns/models/{ready}/artifacts/fold0.weights.h5"] == spooled  # fold 0 recorded whole
    assert store_full["files"][f"mlruns/{run_id}/artifacts/models/fold0.weights.h5"] == spooled
    assert sorted(store_full["runs"]) == [["0", "FAILED"], ["0", "FINISHED"], ["1", "FAILED"], ["cv", "FAILED"]]
    # The spool's estimate of what a fold needs (the weights file holds the model's and the optimizer's variables; the
    # OOF rows) is the weights file's size, within the HDF5 file's own bookkeeping.
    assert 0.95 * spooled < needed < 1.05 * spooled, (needed, spooled)

    # 3. Resumed with room in mlruns/: fold 1 is recorded from the spool, not trained again, and the run finishes.
    text = resumed["output"]
    assert resumed["rc"] == 0 and "Traceback" not in text, text[-3000:]
    assert "fold 1: finished but not recorded (the tracking store was away or full); recording it from" in text
    assert "fold 1: training" not in text and "fold 0: finished earlier, kept" in text
    assert resumed["files"][f"mlruns/{run_id}/artifacts/models/fold1.weights.h5"] == spooled
    assert not [f for f in resumed["files"] if f.startswith("spool/")]
    assert sorted(resumed["models"].values()) == [["0", "READY"], ["1", "FAILED"], ["1", "READY"]], resumed["models"]
    [fold1] = [m for m, (fold, status) in resumed["models"].items() if fold == "1" and status == "READY"]
    assert resumed["files"][f"mlruns/models/{fold1}/artifacts/fold1.weights.h5"] == spooled
    assert sorted(resumed["runs"]) == [["0", "FAILED"], ["0", "FINISHED"], ["1", "FINISHED"], ["cv", "FINISHED"]]
