"""From parquet files to the model's tiles: Kaggle spectrogram tiles, EEG spectrograms, the feature cache."""

from .eeg import eeg_spectrogram, eeg_spectrograms
from .kaggle import kaggle_tiles

__all__ = ["eeg_spectrogram", "eeg_spectrograms", "kaggle_tiles"]
