"""Reading files of Kaggle's HMS layout, with errors that name the file and what is wrong with it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ..constants import EEG_COLUMNS, SPEC_COLUMNS, TEST_COLUMNS, TRAIN_COLUMNS


class DataError(ValueError):
    """A file of the dataset is missing, unreadable or not in Kaggle's layout."""


def eeg_path(root, eeg_id, split: str = "train") -> Path:
    """Where Kaggle keeps the EEG of `eeg_id` for `split` (train or test)."""
    return Path(root) / f"{split}_eegs" / f"{int(eeg_id)}.parquet"


def spectrogram_path(root, spectrogram_id, split: str = "train") -> Path:
    """Where Kaggle keeps the spectrogram `spectrogram_id` for `split` (train or test)."""
    return Path(root) / f"{split}_spectrograms" / f"{int(spectrogram_id)}.parquet"


def _check_columns(path, found, expected) -> None:
    found = list(found)
    missing = [c for c in expected if c not in found]
    extra = [c for c in found if c not in expected]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing column(s) {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if extra:
            parts.append(f"unexpected column(s) {extra[:5]}{' ...' if len(extra) > 5 else ''}")
        raise DataError(f"{path}: {'; '.join(parts)}")
    if found != list(expected):
        raise DataError(f"{path}: columns are not in Kaggle's order")


def read_table_csv(path, columns) -> pd.DataFrame:
    """Read a CSV of the layout and check it has exactly `columns`, in order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path)
    except Exception as error:  # pandas raises many kinds on a damaged CSV
        raise DataError(f"{path}: unreadable CSV ({error})") from error
    _check_columns(path, frame.columns, columns)
    return frame


def _check_numbers(path, frame, ids, offsets) -> pd.DataFrame:
    """Id columns must hold non-negative integers and offset columns non-negative finite numbers; the first cell that
    does not is named by row (as a spreadsheet numbers it: the header is row 1) and column."""
    frame = frame.copy()
    for column in (*ids, *offsets):
        numbers = pd.to_numeric(frame[column], errors="coerce").astype(np.float64)
        wrong = ~np.isfinite(numbers) | (numbers < 0)
        if column in ids:
            wrong |= numbers != np.round(numbers)
        if wrong.any():
            row = int(wrong.to_numpy().argmax())
            what = "a non-negative integer id" if column in ids else "a non-negative number of seconds"
            value = frame[column].iloc[row]
            shown = "an empty cell" if pd.isna(value) else f"'{value}'"
            raise DataError(f"{path}: row {row + 2}, column {column}: {shown} is not {what}")
        frame[column] = numbers.astype(np.int64) if column in ids else numbers
    return frame


def read_train_csv(root) -> pd.DataFrame:
    """train.csv with Kaggle's columns; ids must be integers, offsets numbers, votes non-negative with at least one
    per row."""
    path = Path(root) / "train.csv"
    frame = read_table_csv(path, TRAIN_COLUMNS)
    if frame.empty:
        raise DataError(f"{path}: no rows, only a header: there is nothing to train on")
    frame = _check_numbers(path, frame, ["eeg_id", "eeg_sub_id", "spectrogram_id", "spectrogram_sub_id", "label_id", "patient_id"],
                           ["eeg_label_offset_seconds", "spectrogram_label_offset_seconds"])
    votes = frame[[c for c in TRAIN_COLUMNS if c.endswith("_vote")]]
    for column in votes:
        numbers = pd.to_numeric(votes[column], errors="coerce")
        wrong = numbers.isna() | (numbers < 0)
        if wrong.any():
            row = int(wrong.to_numpy().argmax())
            raise DataError(f"{path}: row {row + 2} (label_id {frame.label_id.iloc[row]}): {column} is {votes[column].iloc[row]!r}; "
                            "vote counts must be non-negative numbers")
    votes = votes.astype(np.float64)
    empty = votes.sum(axis=1) == 0
    if empty.any():
        raise DataError(f"{path}: {int(empty.sum())} row(s) have no votes, e.g. label_id {frame.label_id[empty].iloc[0]}")
    return frame


def read_test_csv(root) -> pd.DataFrame:
    """test.csv with Kaggle's columns (spectrogram_id, eeg_id, patient_id), and at least one row."""
    path = Path(root) / "test.csv"
    frame = read_table_csv(path, TEST_COLUMNS)
    if frame.empty:
        raise DataError(f"{path}: no rows, only a header: there is nothing to predict")
    frame = _check_numbers(path, frame, list(TEST_COLUMNS), [])
    twice = frame.eeg_id.duplicated(keep=False)
    if twice.any():
        rows = [int(r) + 2 for r in np.flatnonzero(twice.to_numpy())[:2]]
        raise DataError(f"{path}: eeg_id {frame.eeg_id[twice].iloc[0]} is in rows {rows[0]} and {rows[1]}: a submission has "
                        "one row per eeg_id")
    return frame


def _read_parquet(path, columns, only=None) -> np.ndarray:
    """(rows, len(columns)) float32 after checking the file has exactly `columns`; with `only`, just
    those columns are read from disk and the others are left as zeros."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        if only is not None:
            _check_columns(path, pq.read_schema(path).names, columns)
        table = pq.read_table(path, columns=list(only) if only is not None else None)
    except DataError:
        raise
    except Exception as error:  # pyarrow raises several kinds on a truncated or corrupt file
        raise DataError(f"{path}: unreadable parquet ({error})") from error
    if only is None:
        _check_columns(path, table.column_names, columns)
    try:
        present = set(table.column_names)
        zeros = np.zeros(table.num_rows, np.float32)
        return np.column_stack([table.column(c).to_numpy(zero_copy_only=False) if c in present else zeros
                                for c in columns]).astype(np.float32, copy=False)
    except (TypeError, ValueError) as error:
        raise DataError(f"{path}: columns are not numeric ({error})") from error


def read_eeg(path, only=None) -> np.ndarray:
    """An EEG parquet as a float32 (rows, 20) array in Kaggle's column order (µV, 200 Hz); `only`
    names the channels to read (the others stay zero), e.g. those of the bipolar chains."""
    return _read_parquet(path, EEG_COLUMNS, only)


def read_spectrogram(path) -> np.ndarray:
    """A spectrogram parquet as a float32 (rows, 401) array: time, then LL, RL, LP, RP x 100 bins."""
    return _read_parquet(path, SPEC_COLUMNS)
