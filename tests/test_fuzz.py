"""Issue 28, item 5: damaged Kaggle-layout input. A seeded sample of `tools/fuzz_inputs.py`'s cases (one file damaged
one way: truncated or corrupt parquet, wrong dtypes, NaN and inf, duplicate and unknown ids, extra, missing and
renamed columns, a BOM, CRLF, non-ASCII, empty files), each through `hms.data check`, `hms.train` and `hms.predict`,
in a real process; and the damage the fuzzer found crashing, through the real commands and the readers."""

import json
import subprocess
import sys

import pandas as pd
import pytest
from mlflow import MlflowClient

from hms.dataset import DataError, load_test, load_train

from .helpers import REPO, run_module


@pytest.mark.slow  # trains a clean run, then up to 3 commands per case
def test_a_seeded_sample_of_damaged_folders_never_crashes(tmp_path):
    out = tmp_path / "fuzz.json"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "fuzz_inputs.py"), "--seeds", "3", "--sample", "6", "--json",
                           str(out)], capture_output=True, text=True, timeout=900, cwd=tmp_path)
    report = json.loads(out.read_text()) if out.exists() else None
    assert report is not None, done.stdout[-3000:] + done.stderr[-3000:]
    crashes = [(c["target"], c["kind"], command, c[command][1]) for c in report["cases"] for command in ("check", "train", "predict")
               if c[command][0] == "crash"]
    assert crashes == [] and done.returncode == 0, crashes
    assert len(report["cases"]) == 6
    assert {c["check"][0] for c in report["cases"]} <= {"ok", "clear"}
    assert any(c[command][0] == "clear" for c in report["cases"] for command in ("check", "train", "predict"))


def copy_of(root, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(root, folder)
    return folder


@pytest.mark.parametrize("column,value,says", [
    ("eeg_id", "abc", "row {row}, column eeg_id: 'abc' is not a non-negative integer id"),
    ("patient_id", "", "row {row}, column patient_id: an empty cell is not a non-negative integer id"),
    ("eeg_label_offset_seconds", "inf", "row {row}, column eeg_label_offset_seconds: 'inf' is not a non-negative number"),
])
def test_a_bad_id_or_offset_in_train_csv_is_named_by_row_and_column(synthetic_root, tmp_path, column, value, says):
    root = copy_of(synthetic_root, tmp_path)
    train = pd.read_csv(root / "train.csv").astype({column: object})
    train.loc[5, column] = value
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError) as error:
        load_train(root)
    assert str(error.value).startswith(f"{root / 'train.csv'}: " + says.format(row=7))


def test_test_csv_naming_a_missing_file_or_an_eeg_id_twice_is_named_by_row(synthetic_root, tmp_path):
    root = copy_of(synthetic_root, tmp_path)
    test = pd.read_csv(root / "test.csv")
    pd.concat([test, test.iloc[[1]]]).to_csv(root / "test.csv", index=False)
    with pytest.raises(DataError, match=rf"test.csv: eeg_id {test.eeg_id[1]} is in rows 3 and {len(test) + 2}"):
        load_test(root)
    test.assign(eeg_id=test.eeg_id.where(test.index != 2, 123456789)).to_csv(root / "test.csv", index=False)
    with pytest.raises(DataError, match=r"test.csv: row 4 names eeg_id 123456789, but .*test_eegs/123456789.parquet does not exist"):
        load_test(root)


@pytest.mark.slow  # real commands
def test_the_commands_name_a_damaged_train_csv_without_a_traceback_or_a_running_run(synthetic_root, tmp_path):
    root = copy_of(synthetic_root, tmp_path)
    train = pd.read_csv(root / "train.csv").astype({"spectrogram_id": object})
    train.loc[3, "spectrogram_id"] = "12x"
    train.to_csv(root / "train.csv", index=False)
    says = f"{root / 'train.csv'}: row 5, column spectrogram_id: '12x' is not a non-negative integer id"
    check = run_module("hms.data", "check", root, "--workers", "1", cwd=tmp_path)
    assert check.returncode == 1 and "row 5, column spectrogram_id" in check.stdout and "Traceback" not in check.stdout + check.stderr
    train_run = run_module("hms.train", "input=eeg1d", "backbone=eeg1d_cnn", "data=kaggle", f"data.root={root}", f"paths.root={tmp_path}",
                           cwd=tmp_path)
    assert train_run.returncode == 1 and says in train_run.stderr and "Traceback" not in train_run.stderr
    if (tmp_path / "mlflow.db").exists():
        client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
        assert not [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id]) if r.info.status == "RUNNING"]
