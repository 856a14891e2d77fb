
import numpy as np
import pandas as pd
import pytest

from hms.constants import EEG_COLUMNS, SPEC_COLUMNS
from hms.dataset import DataError, load_test, read_eeg, read_spectrogram, read_train_csv


def test_reads_the_real_kaggle_files(kaggle_sample):
    eeg = read_eeg(kaggle_sample / "test_eegs" / "3911565283.parquet")
    spec = read_spectrogram(kaggle_sample / "test_spectrograms" / "853520.parquet")
    assert eeg.shape == (10_000, 20) and eeg.dtype == np.float32
    assert spec.shape == (300, 401) and spec[0, 0] == 1.0 and spec[1, 0] == 3.0
    test = load_test(kaggle_sample)
    assert test.loc[0, ["eeg_id", "spectrogram_id", "patient_id"]].tolist() == [3911565283, 853520, 6885]


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"123\.parquet: file not found"):
        read_eeg(tmp_path / "123.parquet")


def test_truncated_parquet_is_named(kaggle_sample, tmp_path):
    data = (kaggle_sample / "test_eegs" / "3911565283.parquet").read_bytes()
    bad = tmp_path / "3911565283.parquet"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="3911565283.parquet: unreadable parquet"):
        read_eeg(bad)


def test_renamed_column_is_named(kaggle_sample, tmp_path):
    frame = pd.read_parquet(kaggle_sample / "test_spectrograms" / "853520.parquet").rename(columns={"LL_0.59": "LL_0.6"})
    frame.to_parquet(tmp_path / "853520.parquet")
    with pytest.raises(DataError, match=r"853520.parquet: missing column\(s\) \['LL_0.59'\]; unexpected column\(s\) \['LL_0.6'\]"):
        read_spectrogram(tmp_path / "853520.parquet")


def test_reordered_columns_are_rejected(kaggle_sample, tmp_path):
    frame = pd.read_parquet(kaggle_sample / "test_eegs" / "3911565283.parquet")
    frame[list(reversed(EEG_COLUMNS))].to_parquet(tmp_path / "1.parquet")
    with pytest.raises(DataError, match="order"):
        read_eeg(tmp_path / "1.parquet")


def test_train_csv_with_a_renamed_column_names_it(synthetic_root, tmp_path):
    frame = pd.read_csv(synthetic_root / "train.csv").rename(columns={"patient_id": "patient"})
    frame.to_csv(tmp_path / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv: missing column\(s\) \['patient_id'\]"):
        read_train_csv(tmp_path)


def test_spec_columns_match_kaggle_exactly(kaggle_sample):
    assert tuple(pd.read_parquet(kaggle_sample / "test_spectrograms" / "853520.parquet").columns) == SPEC_COLUMNS


def test_reading_only_some_channels_still_checks_the_whole_schema(kaggle_sample, tmp_path):
    path = kaggle_sample / "test_eegs" / "3911565283.parquet"
    full = read_eeg(path)
    part = read_eeg(path, only=("Fp1", "O2"))
    np.testing.assert_array_equal(part[:, [0, 18]], full[:, [0, 18]])
    assert (part[:, 1:18] == 0).all()
    pd.read_parquet(path).drop(columns=["EKG"]).to_parquet(tmp_path / "1.parquet")
    with pytest.raises(DataError, match=r"missing column\(s\) \['EKG'\]"):
        read_eeg(tmp_path / "1.parquet", only=("Fp1",))


def test_item12_a_non_numeric_vote_names_the_file_row_and_column(synthetic_root, tmp_path):
    """Issue 14, item 12: a clear error, not a pandas traceback."""
    import shutil

    import pandas as pd

    from hms.dataset import read_train_csv

    root = tmp_path / "votes"
    shutil.copytree(synthetic_root, root)
    train = pd.read_csv(root / "train.csv")
    train["lpd_vote"] = train["lpd_vote"].astype(object)
    train.loc[4, "lpd_vote"] = "three"
    train.to_csv(root / "train.csv", index=False)
    with pytest.raises(DataError, match=r"train.csv: row 6 \(label_id \d+\): lpd_vote is 'three'; vote counts must be"):
        read_train_csv(root)


def test_item13_a_header_only_test_csv_is_named(tmp_path):
    """Issue 14, item 13: no rows to predict is said in words, not Keras' 'PyDataset has length 0'."""
    from hms.dataset import read_test_csv

    (tmp_path / "test.csv").write_text("spectrogram_id,eeg_id,patient_id\n")
    with pytest.raises(DataError, match="test.csv: no rows, only a header"):
        read_test_csv(tmp_path)
