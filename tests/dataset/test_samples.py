import numpy as np
import pandas as pd

from hms.constants import VOTE_COLUMNS
from hms.dataset import load_train, targets, train_samples


def test_one_sample_per_eeg_id_with_summed_normalised_votes(synthetic_root):
    train = pd.read_csv(synthetic_root / "train.csv")
    samples, windows = load_train(synthetic_root)
    assert len(samples) == train.eeg_id.nunique() and samples.eeg_id.is_unique
    assert len(windows) == len(train)
    y = targets(samples)
    np.testing.assert_allclose(y.sum(axis=1), 1.0)
    first = samples.iloc[0]
    rows = train[train.eeg_id == first.eeg_id]
    summed = rows[list(VOTE_COLUMNS)].sum().to_numpy(float)
    np.testing.assert_allclose(y[0], summed / summed.sum())
    assert first.n_windows == len(rows)
    assert first.eeg_offset in set(rows.eeg_label_offset_seconds)


def test_middle_window_total_votes_and_hq_flag():
    rows = pd.DataFrame({
        "eeg_id": [5, 5, 5, 9], "eeg_sub_id": [0, 1, 2, 0], "eeg_label_offset_seconds": [0.0, 4.0, 8.0, 0.0],
        "spectrogram_id": [1, 1, 1, 2], "spectrogram_sub_id": [0, 1, 2, 0],
        "spectrogram_label_offset_seconds": [100.0, 104.0, 108.0, 0.0], "label_id": [1, 2, 3, 4],
        "patient_id": [7, 7, 7, 8], "expert_consensus": ["GRDA", "GRDA", "Other", "LPD"],
        "seizure_vote": [0, 0, 0, 0], "lpd_vote": [0, 0, 0, 2], "gpd_vote": [0, 0, 0, 0], "lrda_vote": [0, 0, 0, 0],
        "grda_vote": [12, 12, 1, 0], "other_vote": [0, 0, 2, 0],
    })
    samples, windows = train_samples(rows)
    five = samples.set_index("eeg_id").loc[5]
    assert (five.eeg_offset, five.spec_offset) == (4.0, 104.0)
    assert five.total_votes == 12 and bool(five.hq)
    assert five.consensus == 4  # grda
    assert not bool(samples.set_index("eeg_id").loc[9].hq)
    assert windows[windows.eeg_id == 5].eeg_offset.tolist() == [0.0, 4.0, 8.0]
