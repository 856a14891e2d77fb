"""A seeded fuzzer of Kaggle-layout input: each case damages one file of a small dataset in one way, then runs
`hms.data check`, `hms.train` (the tiny 1D CNN, 1 epoch, 2 folds) and `hms.predict` (an exported clean model) on it.

    python tools/fuzz_inputs.py                       # every kind on every file type it applies to, seed 0
    python tools/fuzz_inputs.py --seeds 0 1 2 --json fuzz.json

Each command's outcome is one of:
- ok: exit 0 and a correct result (the check says OK or lists the damaged file as bad; the CV run FINISHED with a
  finite cv_kl; the submission has one row per test eeg_id, finite probabilities summing to 1, and where the damage
  kept the values, e.g. a BOM or CRLF line endings, the clean data's predictions);
- clear: a non-zero exit whose message names the damaged file (by path or name), in under a minute;
- crash: anything else: a traceback, a message that does not name the file, a wrong result, a run left RUNNING.

The commands run in this one process (their `main`s, as `python -m` calls them, stdout and stderr captured), so a
case costs its work and not three interpreter starts; an exception that escapes a command is a crash, as the
traceback it would print is. The counts end the output; `--json` writes every case.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

TRAIN = ["input=eeg1d", "backbone=eeg1d_cnn", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8", "cv.folds=2",
         "trainer.epochs=1", "trainer.batch_size=16", "trainer.verbose=0", "tracking.system_metrics=null",
         "schedule.steps=[[0,1.0e-3]]", "data=kaggle", "data.workers=1"]
CSV_KINDS = ("bom", "crlf", "non_ascii", "empty", "header_only", "truncated", "missing_column", "renamed_column",
             "extra_column", "wrong_dtype", "nan", "inf", "duplicate_row", "unknown_id", "negative")
PARQUET_KINDS = ("empty", "truncated", "corrupt", "wrong_dtype", "nan", "inf", "missing_column", "renamed_column",
                 "extra_column", "few_rows", "all_nan", "missing_file")
TARGETS = {"train.csv": CSV_KINDS, "test.csv": CSV_KINDS, "train_eegs": PARQUET_KINDS, "train_spectrograms": PARQUET_KINDS,
           "test_eegs": PARQUET_KINDS, "test_spectrograms": PARQUET_KINDS}
KEEPS_VALUES = {"bom", "crlf", "extra_column", "non_ascii"}  # damage after which the predictions must be the clean ones
NUMERIC = {"train.csv": ["eeg_id", "eeg_label_offset_seconds", "spectrogram_id", "spectrogram_label_offset_seconds", "patient_id",
                         "seizure_vote", "lrda_vote"], "test.csv": ["spectrogram_id", "eeg_id", "patient_id"]}
SECONDS = 60


def cases(seeds) -> list[tuple[str, str, int]]:
    return [(target, kind, seed) for seed in seeds for target, kinds in TARGETS.items() for kind in kinds]


def damage(root: Path, target: str, kind: str, seed: int) -> Path:
    """Damage one file of the dataset at `root` (a copy); the damaged file's path."""
    rng = random.Random(f"{target}/{kind}/{seed}")
    if target.endswith(".csv"):
        return _damage_csv(root / target, target, kind, rng)
    table = pd.read_csv(root / ("train.csv" if target.startswith("train") else "test.csv"))
    ids = sorted(table["eeg_id" if target.endswith("eegs") else "spectrogram_id"].unique())
    path = root / target / f"{rng.choice(ids)}.parquet"
    _damage_parquet(path, kind, rng)
    return path


def _damage_csv(path: Path, name: str, kind: str, rng: random.Random) -> Path:
    text = path.read_text()
    frame = pd.read_csv(path)
    row, column = rng.randrange(len(frame)), rng.choice(NUMERIC[name])
    if kind == "bom":
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    elif kind == "crlf":
        path.write_bytes(text.replace("\n", "\r\n").encode())
    elif kind == "non_ascii":
        if "expert_consensus" in frame:
            frame["expert_consensus"] = frame["expert_consensus"].astype(str) + "·é"
            frame.to_csv(path, index=False)
        else:  # test.csv has no text column: a non-ASCII header
            path.write_text(text.replace("patient_id", "patient_id_é", 1))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "header_only":
        path.write_text(text.splitlines()[0] + "\n")
    elif kind == "truncated":
        path.write_bytes(text.encode()[: rng.randrange(len(text) // 3, len(text) - 2)])
    elif kind == "missing_column":
        frame.drop(columns=[column]).to_csv(path, index=False)
    elif kind == "renamed_column":
        frame.rename(columns={column: column.upper()}).to_csv(path, index=False)
    elif kind == "extra_column":
        frame.assign(notes="x").to_csv(path, index=False)
    elif kind in ("wrong_dtype", "nan", "inf", "negative"):
        frame[column] = frame[column].astype(object)
        frame.loc[row, column] = {"wrong_dtype": "abc", "nan": "", "inf": "inf", "negative": -frame.loc[row, column]}[kind]
        frame.to_csv(path, index=False)
    elif kind == "duplicate_row":
        pd.concat([frame, frame.iloc[[row]]]).to_csv(path, index=False)
    elif kind == "unknown_id":  # a row naming a file the folder does not have
        frame.loc[row, "eeg_id"] = 999_999_999_999
        frame.to_csv(path, index=False)
    else:
        raise ValueError(kind)
    return path


def _damage_parquet(path: Path, kind: str, rng: random.Random) -> None:
    table = pq.read_table(path)
    data = path.read_bytes()
    column = rng.choice(table.column_names[1:] if "time" in table.column_names else table.column_names)
    frame = table.to_pandas()
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(data[: rng.randrange(len(data) // 4, len(data) - 8)])
    elif kind == "corrupt":
        start = rng.randrange(len(data) // 8, len(data) // 2)
        path.write_bytes(data[:start] + bytes(rng.randrange(256) for _ in range(256)) + data[start + 256:])
    elif kind == "missing_file":
        path.unlink()
    elif kind == "wrong_dtype":
        frame[column] = frame[column].astype(str)
        frame.to_parquet(path, index=False)
    elif kind in ("nan", "inf"):
        rows = rng.sample(range(len(frame)), max(1, len(frame) // 20))
        frame.loc[rows, column] = np.nan if kind == "nan" else np.inf * rng.choice([1, -1])
        frame.to_parquet(path, index=False)
    elif kind == "all_nan":
        pq.write_table(pa.table({c: pa.array(np.full(len(frame), np.nan, np.float32)) for c in frame.columns}), path)
    elif kind == "missing_column":
        frame.drop(columns=[column]).to_parquet(path, index=False)
    elif kind == "renamed_column":
        frame.rename(columns={column: column.lower() + "_x"}).to_parquet(path, index=False)
    elif kind == "extra_column":
        frame.assign(extra=1.0).to_parquet(path, index=False)
    elif kind == "few_rows":
        frame.iloc[:10].to_parquet(path, index=False)
    else:
        raise ValueError(kind)


def call(command: str, argv: list[str]) -> tuple[int, str, float]:
    """Run one command's main in this process as `python -m` would: (exit code, stdout+stderr, seconds); an escaping
    exception gives code None and its traceback."""
    import traceback

    out = io.StringIO()
    start = time.perf_counter()
    saved = sys.argv
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        try:
            if command == "check":
                from hms.data.__main__ import main
                code = main(["check", *argv, "--workers", "1"])
            elif command == "train":
                from hms.train import main
                sys.argv = ["hms.train", *argv]
                main()
                code = 0
            else:
                from hms.predict import main
                code = main(argv)
        except SystemExit as ended:
            code = ended.code if isinstance(ended.code, int) else (0 if ended.code is None else 1)
            if not isinstance(ended.code, (int, type(None))):
                print(ended.code)
        except BaseException:  # noqa: BLE001 - what a user would see as a traceback
            traceback.print_exc(file=out)
            code = None
        finally:
            sys.argv = saved
    return code, out.getvalue(), time.perf_counter() - start


def judge(command, code, output, seconds, damaged: Path, root: Path, result) -> tuple[str, str]:
    """('ok' | 'clear' | 'crash', why)."""
    names = {damaged.name, str(damaged), str(damaged.relative_to(root))}
    if code is None or "Traceback (most recent call last)" in output or "Error executing job" in output:
        return "crash", "traceback: " + output.strip().splitlines()[-1][:200] if output.strip() else "traceback"
    if code != 0:
        if not any(n in output for n in names):
            return "crash", f"exit {code} without naming {damaged.name}: {output.strip().splitlines()[-1][:200] if output.strip() else ''}"
        if seconds > SECONDS:
            return "crash", f"a clear error, but after {seconds:.0f} s"
        return "clear", [line for line in output.splitlines() if damaged.name in line][0][:240]
    if result is not None:
        return result
    return "ok", ""


def running_runs(store: Path) -> list[str]:
    from mlflow import MlflowClient

    if not (store / "mlflow.db").exists():
        return []
    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    return [r.info.run_id for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.info.status == "RUNNING"]


def train_result(store: Path):
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    experiment = client.get_experiment_by_name("hms")
    cv = client.search_runs([experiment.experiment_id], "tags.`hms.run_type` = 'cv'") if experiment else []
    if len(cv) != 1 or cv[0].info.status != "FINISHED" or not np.isfinite(cv[0].data.metrics.get("cv_kl", np.nan)):
        return "crash", f"exit 0, but its CV run is {[(r.info.status, r.data.metrics.get('cv_kl')) for r in cv]}"
    return None


def predict_result(out: Path, root: Path, clean: pd.DataFrame | None, kind: str):
    try:
        submission = pd.read_csv(out)
        wanted = sorted(pd.read_csv(root / "test.csv", encoding="utf-8-sig").iloc[:, 1].unique())
    except Exception as error:  # noqa: BLE001 - a damaged test.csv that predict accepted: compare with the clean ids
        wanted = None if clean is None else sorted(clean.eeg_id)
        if wanted is None:
            return "crash", f"exit 0, but its submission is unreadable ({error})"
    values = submission.drop(columns="eeg_id").to_numpy(np.float64)
    if (wanted is not None and sorted(submission.eeg_id) != wanted) or not np.isfinite(values).all() \
            or not np.allclose(values.sum(axis=1), 1, atol=1e-4):
        return "crash", "exit 0, but the submission is wrong (rows, NaN or sums)"
    if clean is not None and kind in KEEPS_VALUES:
        same = clean.set_index("eeg_id").loc[submission.eeg_id].to_numpy(np.float64)
        if not np.allclose(values, same, atol=1e-5):
            return "crash", "exit 0, but the predictions differ from the clean data's"
    return None


def run_case(base: Path, models: Path, work: Path, clean: pd.DataFrame, target: str, kind: str, seed: int) -> dict:
    root = work / "data"
    shutil.copytree(base, root)
    damaged = damage(root, target, kind, seed)
    store, out = work / "store", work / "submission.csv"
    outcomes = {}
    code, output, seconds = call("check", [str(root)])  # a bad file listed is a clear error; a pass is judged by the others
    outcomes["check"] = judge("check", code, output, seconds, damaged, root, None) + (round(seconds, 1),)
    code, output, seconds = call("train", [*TRAIN, f"data.root={root}", f"paths.root={store}", f"data.cache_dir={work}/cache"])
    result = train_result(store) if code == 0 else None
    outcomes["train"] = judge("train", code, output, seconds, damaged, root, result) + (round(seconds, 1),)
    left = running_runs(store)
    if left:
        outcomes["train"] = ("crash", f"runs left RUNNING: {left}", outcomes["train"][2])
    code, output, seconds = call("predict", ["--models", str(models), "--out", str(out), "data=kaggle", f"data.root={root}",
                                             f"data.cache_dir={work}/cache", f"paths.root={store}", "data.workers=1"])
    result = predict_result(out, root, clean, kind) if code == 0 else None
    outcomes["predict"] = judge("predict", code, output, seconds, damaged, root, result) + (round(seconds, 1),)
    return {"target": target, "kind": kind, "seed": seed, "file": str(damaged.relative_to(root)), **outcomes}


def prepare(folder: Path, eegs: int, seed: int) -> tuple[Path, Path, pd.DataFrame]:
    """A small synthetic dataset (no answer key: as a Kaggle download), a clean run's exported models, its predictions."""
    from hms.synthetic import SynthSpec, generate

    base = folder / "base"
    generate(base, SynthSpec(eegs=eegs, patients=max(4, eegs // 3), seed=seed, test_eegs=3))
    shutil.rmtree(base / "_synthetic", ignore_errors=True)
    store = folder / "clean"
    code, output, _ = call("train", [*TRAIN, f"data.root={base}", f"paths.root={store}", f"data.cache_dir={folder}/cache"])
    if code != 0:
        sys.exit(f"the clean run failed:\n{output[-3000:]}")
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}/mlflow.db")
    [run] = client.search_runs([client.get_experiment_by_name("hms").experiment_id], "tags.`hms.run_type` = 'cv'")
    models = folder / "models"
    code, output, _ = call("predict", ["export", "--run", run.info.run_id, "--to", str(models), f"paths.root={store}"])
    if code != 0:
        sys.exit(f"the export failed:\n{output[-3000:]}")
    out = folder / "clean.csv"
    code, output, _ = call("predict", ["--models", str(models), "--out", str(out), "data=kaggle", f"data.root={base}",
                                       f"data.cache_dir={folder}/cache", f"paths.root={store}", "data.workers=1"])
    if code != 0:
        sys.exit(f"the clean prediction failed:\n{output[-3000:]}")
    return base, models, pd.read_csv(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--kinds", nargs="+", default=None, help="only these kinds of damage")
    parser.add_argument("--targets", nargs="+", default=None, help="only these files (train.csv, test_eegs, ...)")
    parser.add_argument("--sample", type=int, default=None, help="only this many of the cases, drawn with the first seed")
    parser.add_argument("--eegs", type=int, default=12)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from hms import logs

    logs.install()
    todo = [c for c in cases(args.seeds) if (args.kinds is None or c[1] in args.kinds) and (args.targets is None or c[0] in args.targets)]
    if args.sample is not None:
        todo = sorted(random.Random(args.seeds[0]).sample(todo, min(args.sample, len(todo))), key=todo.index)
    results = []
    with tempfile.TemporaryDirectory(prefix="hms-fuzz-") as tmp:
        tmp = Path(tmp)
        base, models, clean = prepare(tmp, args.eegs, seed=min(args.seeds) + 1)
        for k, (target, kind, seed) in enumerate(todo):
            work = tmp / f"case{k}"
            results.append(run_case(base, models, work, clean, target, kind, seed))
            shutil.rmtree(work, ignore_errors=True)
            row = results[-1]
            print(f"{target:<18} {kind:<15} seed {seed}: " + "  ".join(f"{c} {row[c][0]}" for c in ("check", "train", "predict")),
                  flush=True)
            for command in ("check", "train", "predict"):
                if row[command][0] == "crash":
                    print(f"    {command}: {row[command][1]}", flush=True)
    counts = {c: {o: sum(r[c][0] == o for r in results) for o in ("ok", "clear", "crash")} for c in ("check", "train", "predict")}
    print(f"\n{len(results)} cases ({len(results) * 3} commands): " + "; ".join(
        f"{c}: {n['ok']} ok, {n['clear']} clear errors, {n['crash']} crashes" for c, n in counts.items()))
    if args.json:
        args.json.write_text(json.dumps({"cases": results, "counts": counts}, indent=1))
    return 1 if any(n["crash"] for n in counts.values()) else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.exit(main())
