"""One training sample per eeg_id, as the notebook builds them, with all its labelled windows kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import CLASSES, VOTE_COLUMNS
from .layout import DataError, eeg_path, read_test_csv, read_train_csv, spectrogram_path

TARGET_COLUMNS = tuple(f"y_{c}" for c in CLASSES)
PRED_COLUMNS = tuple(f"p_{c}" for c in CLASSES)  # predicted probabilities in oof.parquet
HQ_VOTES = 10  # the top solutions' threshold for "high-quality" windows


def train_samples(train: pd.DataFrame, source: str = "train.csv") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Samples (one per eeg_id, votes summed over its rows and normalised) and their labelled windows.

    A sample's fixed window is its middle labelled row (EEG and spectrogram offsets of that row);
    `total_votes` is the largest rater count among its rows, so `hq` means >= 10 raters on a window.
    """
    for key in ("patient_id", "spectrogram_id"):
        owners = train.groupby("eeg_id")[key].nunique()
        if (owners > 1).any():
            raise DataError(f"{source}: eeg_id {owners.index[owners > 1][0]} has more than one {key}")
    rows = train.assign(_raters=train[list(VOTE_COLUMNS)].sum(axis=1)).sort_values(["eeg_id", "eeg_label_offset_seconds"])
    groups = rows.groupby("eeg_id", sort=True)
    votes = groups[list(VOTE_COLUMNS)].sum()
    middle = _middle_rows(rows)
    samples = pd.DataFrame({
        "eeg_id": votes.index.to_numpy(np.int64),
        "spectrogram_id": groups["spectrogram_id"].first().to_numpy(np.int64),
        "patient_id": groups["patient_id"].first().to_numpy(np.int64),
        "eeg_offset": middle["eeg_label_offset_seconds"].to_numpy(np.float64),
        "spec_offset": middle["spectrogram_label_offset_seconds"].to_numpy(np.float64),
        "total_votes": groups["_raters"].max().to_numpy(np.int64),
        "n_windows": groups.size().to_numpy(np.int64),
    })
    counts = votes.to_numpy(np.float64)
    targets = counts / counts.sum(axis=1, keepdims=True)
    for i, column in enumerate(TARGET_COLUMNS):
        samples[column] = targets[:, i]
    samples["consensus"] = targets.argmax(axis=1)
    samples["hq"] = samples["total_votes"] >= HQ_VOTES
    windows = rows[["eeg_id", "eeg_label_offset_seconds", "spectrogram_label_offset_seconds"]].rename(
        columns={"eeg_label_offset_seconds": "eeg_offset", "spectrogram_label_offset_seconds": "spec_offset"}
    ).reset_index(drop=True)
    return samples, windows


def _middle_rows(rows: pd.DataFrame) -> pd.DataFrame:
    position = rows.groupby("eeg_id").cumcount()
    size = rows.groupby("eeg_id")["eeg_id"].transform("size")
    return rows[position == size // 2]


def load_train(root) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read `root/train.csv` into samples and windows (see `train_samples`)."""
    train = read_train_csv(root)
    _check_files(root, train, "train")
    return train_samples(train, source=f"{root}/train.csv")


def _check_files(root, table: pd.DataFrame, split: str) -> None:
    """Every EEG and spectrogram the table names is in the folder; the first that is not is named with its row."""
    for column, where in (("eeg_id", eeg_path), ("spectrogram_id", spectrogram_path)):
        ids = table[column].drop_duplicates()
        missing = [(row, int(i)) for row, i in ids.items() if not where(root, int(i), split).is_file()]
        if missing:
            row, first = missing[0]
            raise DataError(f"{Path(root) / f'{split}.csv'}: row {row + 2} names {column} {first}, but "
                            f"{where(root, first, split)} does not exist ({len(missing)} {column}(s) named there have no file; "
                            f"`python -m hms.data check {root}` lists every one)")


def load_test(root) -> pd.DataFrame:
    """Read `root/test.csv` into samples: one 50 s EEG and one 10-minute spectrogram, both from offset 0."""
    test = read_test_csv(root)
    _check_files(root, test, "test")
    return test.assign(eeg_offset=0.0, spec_offset=0.0)[["eeg_id", "spectrogram_id", "patient_id", "eeg_offset", "spec_offset"]]


def targets(samples: pd.DataFrame) -> np.ndarray:
    """The (n, 6) normalised vote distributions of `samples`."""
    return samples[list(TARGET_COLUMNS)].to_numpy(np.float64)
