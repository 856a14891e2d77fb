import shutil

import pandas as pd

from ..helpers import run_module


def test_check_passes_a_synthetic_dataset(synthetic_root):
    result = run_module("hms.data", "check", synthetic_root)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "train.csv:" in result.stdout and "40 eeg_ids" in result.stdout
    assert "NaN share" in result.stdout and "all files OK" in result.stdout


def test_check_passes_the_real_sample(kaggle_sample):
    result = run_module("hms.data", "check", kaggle_sample)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "test_eegs: 1 files" in result.stdout


def test_check_names_every_damaged_file(synthetic_root, tmp_path):
    root = tmp_path / "damaged"
    shutil.copytree(synthetic_root, root)
    train = pd.read_csv(root / "train.csv")
    eeg_a, eeg_b = sorted(train.eeg_id.unique())[:2]
    spec = sorted(train.spectrogram_id.unique())[-1]
    truncated = root / "train_eegs" / f"{eeg_a}.parquet"
    truncated.write_bytes(truncated.read_bytes()[:5000])
    (root / "train_eegs" / f"{eeg_b}.parquet").unlink()
    renamed = root / "train_spectrograms" / f"{spec}.parquet"
    pd.read_parquet(renamed).rename(columns={"RP_19.92": "RP_20"}).to_parquet(renamed)
    test_eeg = root / "test_eegs" / f"{pd.read_csv(root / 'test.csv').eeg_id[0]}.parquet"
    pd.read_parquet(test_eeg).iloc[:5000].to_parquet(test_eeg)  # a 25 s file where 50 s are labelled

    result = run_module("hms.data", "check", root)
    assert result.returncode == 1
    out = result.stdout
    assert "4 bad file(s)" in out
    assert f"{eeg_a}.parquet: unreadable parquet" in out
    assert f"{eeg_b}.parquet: file not found" in out
    assert f"{spec}.parquet: missing column(s) ['RP_19.92']" in out
    assert f"{test_eeg.name}: 5000 rows, but a labelled window needs 10000" in out


def test_check_reports_a_broken_train_csv_and_still_checks_test(synthetic_root, tmp_path):
    root = tmp_path / "badcsv"
    shutil.copytree(synthetic_root, root)
    pd.read_csv(root / "train.csv").drop(columns=["label_id"]).to_csv(root / "train.csv", index=False)
    result = run_module("hms.data", "check", root)
    assert result.returncode == 1
    assert "train.csv: missing column(s) ['label_id']" in result.stdout
    assert "test_eegs: 8 files" in result.stdout


def test_item04_an_all_nan_eeg_is_named_by_check(synthetic_root, tmp_path):
    """Issue 14, item 4: an EEG whose values are all NaN is a bad file, not a pass."""
    root = tmp_path / "nan"
    shutil.copytree(synthetic_root, root)
    eeg = root / "train_eegs" / f"{sorted(pd.read_csv(root / 'train.csv').eeg_id.unique())[3]}.parquet"
    frame = pd.read_parquet(eeg)
    frame.loc[:, :] = float("nan")
    frame.to_parquet(eeg, index=False)
    result = run_module("hms.data", "check", root)
    assert result.returncode == 1
    assert f"{eeg.name}: every value is NaN" in result.stdout and "1 bad file(s)" in result.stdout
