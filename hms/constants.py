"""Names and layout facts of the HMS data that every module shares."""

import math

CLASSES = ("seizure", "lpd", "gpd", "lrda", "grda", "other")
VOTE_COLUMNS = tuple(f"{c}_vote" for c in CLASSES)
CONSENSUS_NAMES = ("Seizure", "LPD", "GPD", "LRDA", "GRDA", "Other")

TRAIN_COLUMNS = (
    "eeg_id", "eeg_sub_id", "eeg_label_offset_seconds", "spectrogram_id",
    "spectrogram_sub_id", "spectrogram_label_offset_seconds", "label_id", "patient_id",
    "expert_consensus", *VOTE_COLUMNS,
)
TEST_COLUMNS = ("spectrogram_id", "eeg_id", "patient_id")
SUBMISSION_COLUMNS = ("eeg_id", *VOTE_COLUMNS)

EEG_COLUMNS = (
    "Fp1", "F3", "C3", "P3", "F7", "T3", "T5", "O1", "Fz", "Cz", "Pz",
    "Fp2", "F4", "C4", "P4", "F8", "T4", "T6", "O2", "EKG",
)
EEG_RATE = 200  # Hz
EEG_WINDOW_SECONDS = 50
EEG_WINDOW_ROWS = EEG_RATE * EEG_WINDOW_SECONDS  # 10,000

REGIONS = ("LL", "RL", "LP", "RP")  # Kaggle's spectrogram order
CHAINS = {
    "LL": (("Fp1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1")),
    "RL": (("Fp2", "F8"), ("F8", "T4"), ("T4", "T6"), ("T6", "O2")),
    "LP": (("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1")),
    "RP": (("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2")),
}
# Kaggle's 100 frequency bins: those of a 1024-point FFT at 200 Hz from bin 3 (0.59 Hz) to 102 (19.92 Hz).
SPEC_NFFT = 1024
SPEC_BINS = tuple(range(3, 103))
# Kaggle rounds each bin frequency half-up to 2 decimals (3.125 -> "3.13").
SPEC_FREQS = tuple(math.floor(b * EEG_RATE / SPEC_NFFT * 100 + 0.5) / 100 for b in SPEC_BINS)
SPEC_COLUMNS = ("time", *(f"{r}_{f}" for r in REGIONS for f in SPEC_FREQS))
SPEC_ROW_SECONDS = 2
SPEC_WINDOW_ROWS = 300  # 10 minutes
