"""Helpers the tests share: paths, running a command as a user would, tiny run overrides, reading a run store."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlflow import MlflowClient

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("HMS_SHARED", REPO.parent / "shared"))
KAGGLE_SAMPLE = SHARED / "data" / "kaggle_sample"
TRAIN_VOTES = SHARED / "data" / "train_votes.csv"


def run_module(*args, cwd=None, env=None):
    """Run `python -m ...` as a user would, returning the completed process."""
    import subprocess

    return subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd or REPO, env=env,
                          capture_output=True, text=True, timeout=900)


TINY = ["backbone=efficientnet_b0", "input.tile=[16,32]", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null",
        "trainer.epochs=2", "schedule.steps=[[0,1.0e-3],[0.5,3.0e-4]]"]


def tiny(root, store, *extra):
    return [*TINY, "data=kaggle", f"data.root={root}", f"data.cache_dir={store}/cache", "data.workers=1",
            f"tracking.uri=sqlite:///{store}/mlflow.db", *extra]


def runs(store, experiment="hms"):
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    exp = client.get_experiment_by_name(experiment)
    return client, exp, client.search_runs([exp.experiment_id])


SAME_FOLDS = "params.`cv.folds` = '2'"


def data_overrides(root, store):
    """Overrides that point hms.predict (or compose) at a dataset and a run store."""
    return ["data=kaggle", f"data.root={root}", f"data.cache_dir={store}/cache", "data.workers=1", f"tracking.uri=sqlite:///{store}/mlflow.db"]


def chaos(command, trigger: str, cwd, seed: int, kills: int = 3, delay: float = 6.0, seconds: float = 500, env=None):
    """Two worker processes (`command(name)` gives each one's argv) kept running: up to `kills` times, once a worker
    prints a line starting with or holding `trigger`, it is SIGKILLed (the first at once, the others after a random
    0-`delay` s) and another is launched in its place at once. Returns when every worker has ended, or raises after
    `seconds`: (exit codes by worker name, names killed, workers launched, their output)."""
    import queue
    import random
    import subprocess
    import threading
    import time

    rng, lines = random.Random(seed), queue.Queue()

    def start(name):
        process = subprocess.Popen(command(name), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "PYTHONUNBUFFERED": "1", "HMS_WORKER": name, **(env or {})})
        threading.Thread(target=lambda: [lines.put((name, line)) for line in process.stdout], daemon=True).start()
        return process

    workers = {f"w{k}": start(f"w{k}") for k in range(2)}
    killed, output, planned = [], [], None
    deadline = time.monotonic() + seconds
    while any(p.poll() is None for p in workers.values()) and time.monotonic() < deadline:
        try:
            name, line = lines.get(timeout=0.5)
            output.append(f"{name}: {line}")
        except queue.Empty:
            name, line = None, ""
        if trigger in line and len(killed) < kills and planned is None:
            planned = (name, time.monotonic() + (0 if not killed else rng.uniform(0, delay)))
        if planned and time.monotonic() >= planned[1]:
            if workers[planned[0]].poll() is None:
                workers[planned[0]].kill()
                workers[planned[0]].wait()
                killed.append(planned[0])
                workers[f"w{len(workers)}"] = start(f"w{len(workers)}")  # relaunched at once
            planned = None
    if time.monotonic() >= deadline:
        for p in workers.values():
            p.kill()
        raise AssertionError(f"the workers did not end in {seconds} s:\n" + "".join(output)[-3000:])
    return {name: p.wait() for name, p in workers.items()}, killed, len(workers), "".join(output)
