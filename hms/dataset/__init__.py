"""The HMS data: Kaggle's layout, one sample per eeg_id, patient-grouped folds."""

from .folds import assign_folds
from .layout import (
    DataError, eeg_path, read_eeg, read_spectrogram, read_test_csv, read_train_csv, spectrogram_path,
)
from .samples import HQ_VOTES, PRED_COLUMNS, TARGET_COLUMNS, load_test, load_train, targets, train_samples

__all__ = [
    "DataError", "HQ_VOTES", "PRED_COLUMNS", "TARGET_COLUMNS", "assign_folds", "eeg_path", "load_test", "load_train",
    "read_eeg", "read_spectrogram", "read_test_csv", "read_train_csv", "spectrogram_path", "targets", "train_samples",
]
