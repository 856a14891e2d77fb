"""Ensembles on held-out synthetic sets with a test split of new patients: CV beside the test score for a 1D CNN seed,
its 3-seed bag, the same seed with vote weights, a 2D B0 and `hms.ensemble` of the bag and the B0.

    python benchmarks/heldout_ensembles.py OUT_DIR [--set NAME:EEGS:PATIENTS:SEED:TEST_EEGS:SIGNAL ...]

Every step is the command a user runs (hms.synth, hms.train, hms.ensemble, hms.predict with the set's answer key). It
prints one table per set: cv_kl, cv_kl_hq, test_kl, test_kl_hq beside the class prior and the test's noise floor (the
KL of the true class probabilities from the votes they drew, from the generator's truth.csv). Not a speed benchmark:
it measures whether the ensemble methods, the seed bag and the vote weights hold up on patients no run has seen.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from mlflow import MlflowClient

CLASSES = ("seizure", "lpd", "gpd", "lrda", "grda", "other")
VOTES = [f"{c}_vote" for c in CLASSES]
DEFAULT_SETS = ["H4:300:60:404:200:0.8", "H5:240:48:505:150:1.0"]
ONE_D = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "trainer.epochs=12"]
TWO_D = ["backbone=efficientnet_b0", "input.tile=[32,64]", "trainer.epochs=6"]


def run(*args, cwd) -> str:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", *map(str, args)], cwd=cwd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(map(str, args[:3]))} failed:\n{done.stderr[-3000:]}")
    print(f"  {args[0]} {' '.join(str(a) for a in args[1:] if '=' not in str(a) or 'seeds' in str(a) or 'weight' in str(a))[:80]}"
          f" ({time.perf_counter() - started:.0f} s)", flush=True)
    return done.stdout + done.stderr


def noise_floor(root: Path) -> float:
    truth = pd.read_csv(root / "_synthetic" / "truth.csv")
    test = truth[truth.split == "test"]
    p = test[[f"p_{c}" for c in CLASSES]].to_numpy(float)
    v = test[VOTES].to_numpy(float)
    y = v / v.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.where(y > 0, y * np.log(y / np.clip(p, 1e-15, 1)), 0).sum(axis=1).mean())


def one_set(out: Path, spec: str) -> list[dict]:
    name, eegs, patients, seed, test, signal = spec.split(":")
    folder = out / name
    root = folder / "data"
    folder.mkdir(parents=True, exist_ok=True)
    print(f"{name}: {eegs} eeg_ids, {patients} patients, seed {seed}, {test} test eeg_ids of new patients, signal {signal}")
    if not (root / "_synthetic" / "meta.json").is_file():
        run("hms.synth", root, "--eegs", eegs, "--patients", patients, "--seed", seed, "--test-eegs", test, "--signal", signal,
            cwd=folder)
    uri = f"sqlite:///{folder}/mlflow.db"
    common = ["data=kaggle", f"data.root={root}", f"data.cache_dir={folder}/cache", f"tracking.uri={uri}", "cv.folds=3",
              "trainer.verbose=0", "tracking.system_metrics=null"]
    client = MlflowClient(uri)
    rows = []

    def cv_run(label, *overrides):
        run("hms.train", *common, *overrides, cwd=folder)
        found = client.search_runs([client.get_experiment_by_name("hms").experiment_id], "tags.`hms.run_type` = 'cv'",
                                   order_by=["attributes.start_time DESC"], max_results=50)
        return next(r for r in found if "hms.bag" not in r.data.tags).info.run_id

    bag = cv_run("1D bag", *ONE_D, "cv.seeds=[0,1,2]")
    seeds = {r.data.tags["hms.seed"]: r.info.run_id for r in client.search_runs(
        [client.get_experiment_by_name("hms").experiment_id], f"tags.`hms.bag` = '{bag}'")}
    weighted = cv_run("1D vote weights", *ONE_D, "seed=0", "cv.fold_seed=42", "cv.sample_weight=10")
    tiles = cv_run("2D B0", *TWO_D)
    said = run("hms.ensemble", "--tracking-uri", uri, "--runs", bag, tiles, "--trials", "100", cwd=folder)
    ensemble = client.search_runs([client.get_experiment_by_name("hms").experiment_id], "tags.`hms.run_type` = 'ensemble'",
                                  order_by=["attributes.start_time DESC"], max_results=1)[0].info.run_id
    for label, flag, run_id in [("1D CNN, seed 0", "--run", seeds["0"]), ("1D CNN, 3-seed bag", "--run", bag),
                                ("1D CNN, seed 0, cv.sample_weight=10", "--run", weighted), ("2D B0 32x64", "--run", tiles),
                                ("ensemble (bag + B0)", "--ensemble", ensemble)]:
        run("hms.predict", flag, run_id, "--out", folder / f"{run_id}.csv", *common[:4], cwd=folder)
        m = client.get_run(run_id).data.metrics
        rows.append({"set": name, "model": label, "cv_kl": m.get("cv_kl"), "cv_kl_hq": m.get("cv_kl_hq"),
                     "prior_kl": m.get("prior_kl", m.get("prior_kl_best")), "test_kl": m["test_kl"], "test_kl_hq": m.get("test_kl_hq"),
                     "test_prior_kl": m["test_prior_kl"], "test_floor": noise_floor(root)})
    m = client.get_run(ensemble).data.metrics
    methods = {k[:-len("_kl_nested")]: v for k, v in m.items() if k.endswith("_kl_nested") and k != "cv_kl_nested"}
    chosen = client.get_run(ensemble).data.tags.get("hms.method")
    extra = {"set": name, "chosen": chosen, "chosen_nested": m["cv_kl_nested"], "optuna_nested": methods.get("optuna"),
             "methods_nested": methods, "bag_gain": client.get_run(bag).data.metrics["bag_gain"]}
    (folder / "summary.json").write_text(json.dumps({"rows": rows, "ensemble": extra}, indent=2, default=float))
    print(said.splitlines()[-1] if said else "")
    return rows, extra


def markdown(rows: list[dict]) -> str:
    heads = list(rows[0])
    cell = lambda v: f"{v:.4f}" if isinstance(v, float) else str(v)  # noqa: E731
    return "\n".join(["| " + " | ".join(heads) + " |", "|" + " --- |" * len(heads)]
                     + ["| " + " | ".join(cell(r[h]) for h in heads) + " |" for r in rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--set", action="append", default=None, help="NAME:EEGS:PATIENTS:SEED:TEST_EEGS:SIGNAL")
    args = parser.parse_args()
    for spec in args.set or DEFAULT_SETS:
        rows, extra = one_set(args.out, spec)
        print(markdown(rows))
        print(json.dumps(extra, default=float))


if __name__ == "__main__":
    main()
