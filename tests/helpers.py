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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def end_process_group(process, grace: float = 30) -> None:
    """SIGTERM to the process's group, then SIGKILL if it has not ended within `grace` seconds: a busy CI
    machine can leave an MLflow server's graceful shutdown hanging, and a test's clean-up must not fail on it."""
    import signal
    import subprocess

    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def mlflow_server(folder, port: int, seconds: float = 120):
    """A real `mlflow server` on a SQLite store in `folder`, its artifacts in folder/server-artifacts; returns the
    process once /health answers."""
    import subprocess
    import time
    import urllib.request

    process = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                                "--backend-store-uri", f"sqlite:///{folder}/server.db", "--artifacts-destination",
                                str(Path(folder) / "server-artifacts"), "--workers", "1"], cwd=folder,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1)
            return process
        except OSError:
            if process.poll() is not None:
                raise AssertionError(f"the MLflow server exited with {process.returncode}")
            time.sleep(0.5)
    end_process_group(process)
    raise AssertionError(f"the MLflow server did not answer in {seconds} s")


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


# Many runs on one store at once (issue 28's load item): the tiny 1D CNN, 2 folds, 1 epoch.
LOAD_RUN = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8", "cv.folds=2",
            "trainer.epochs=1", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null",
            "schedule.steps=[[0,1.0e-3],[0.5,5.0e-4]]", "data=kaggle", "data.workers=1"]
ONE_THREAD = {"OMP_NUM_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1"}  # a process among many
STORE_ERRORS = ("database is locked", "deadlock detected", "OperationalError", "IntegrityError", "Traceback")


class Load:
    def __init__(self, codes, outputs):
        self.codes, self.outputs = codes, outputs
        self.errors = sum(line.count(e) for out in outputs for line in out.splitlines() for e in STORE_ERRORS)
        self.retries = sum(out.count("retrying") + out.count("another client was creating its schema") for out in outputs)


def concurrent_runs(n: int, uri: str, root, cache, folder, *extra, seconds: float = 600) -> Load:
    """`n` `python -m hms.train` processes started together on one store `uri` and one feature cache."""
    import subprocess

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    processes = [subprocess.Popen([sys.executable, "-m", "hms.train", *LOAD_RUN, f"data.root={root}", f"data.cache_dir={cache}",
                                   f"tracking.uri={uri}", f"paths.root={folder}", f"seed={k}", *extra], cwd=folder,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, **ONE_THREAD})
                 for k in range(n)]
    outputs = [p.communicate(timeout=seconds)[0] for p in processes]
    return Load([p.returncode for p in processes], outputs)


def store_problems(uri: str, runs: int, folds: int, experiment: str = "hms") -> list[str]:
    """What is missing or wrong in a store that `runs` CV runs of `folds` folds each should have completed."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return [f"no experiment {experiment!r}"]
    everything = client.search_runs([exp.experiment_id], max_results=10_000)
    problems = [f"run {r.info.run_id} left {r.info.status}" for r in everything if r.info.status == "RUNNING"]
    parents = [r for r in everything if r.data.tags.get("hms.run_type") == "cv"]
    if len(parents) != runs:
        problems.append(f"{len(parents)} CV runs, not {runs}")
    for parent in parents:
        run_id = parent.info.run_id
        if parent.info.status != "FINISHED" or "cv_kl" not in parent.data.metrics:
            problems.append(f"CV run {run_id} is {parent.info.status} with metrics {sorted(parent.data.metrics)}")
        children = [r for r in everything if r.data.tags.get("mlflow.parentRunId") == run_id]
        done = sorted(r.data.tags.get("hms.fold") for r in children if r.info.status == "FINISHED" and "kl" in r.data.metrics)
        if done != [str(k) for k in range(folds)]:
            problems.append(f"CV run {run_id} has finished folds {done}")
        if "oof.parquet" not in {a.path for a in client.list_artifacts(run_id)}:
            problems.append(f"CV run {run_id} has no oof.parquet")
    return problems


def fresh_postgres_database(server_url: str, name: str) -> str:
    """A new, empty database on the PostgreSQL server of `server_url`; its URL."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(server_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}"'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return server_url.rsplit("/", 1)[0] + "/" + name
