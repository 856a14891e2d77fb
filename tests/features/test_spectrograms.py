import numpy as np
import pandas as pd
import pytest

from hms.dataset import load_train, read_eeg, read_spectrogram
from hms.features import eeg_spectrogram, eeg_spectrograms, kaggle_tiles

from hms.features.notebook import librosa_eeg_spectrogram, notebook_kaggle_tiles


def test_eeg_spectrogram_matches_librosa_on_real_eeg(kaggle_sample):
    path = kaggle_sample / "test_eegs" / "3911565283.parquet"
    ours = eeg_spectrogram(read_eeg(path))
    assert ours.shape == (128, 256, 4) and ours.dtype == np.float32
    assert np.abs(ours - librosa_eeg_spectrogram(pd.read_parquet(path))).max() < 1e-3


def test_eeg_spectrogram_matches_librosa_with_nan_runs_and_a_dead_channel(synthetic_root, tmp_path):
    eeg = pd.read_parquet(next((synthetic_root / "test_eegs").glob("*.parquet")))
    eeg.iloc[1200:2400] = np.nan  # a run over all channels
    eeg["T4"] = np.nan  # a whole dead channel: F8-T4 and T4-T6 are all NaN
    eeg.loc[7000:7049, "Fp1"] = np.nan
    path = tmp_path / "damaged.parquet"
    eeg.to_parquet(path)
    ours = eeg_spectrogram(read_eeg(path))
    assert np.isfinite(ours).all()
    assert np.abs(ours - librosa_eeg_spectrogram(pd.read_parquet(path))).max() < 1e-3


def test_batched_equals_one_by_one(synthetic_root):
    samples, _ = load_train(synthetic_root)
    windows = [read_eeg(synthetic_root / "train_eegs" / f"{i}.parquet")[:10_000] for i in samples.eeg_id[:3]]
    batch = eeg_spectrograms(np.stack(windows))
    for k, window in enumerate(windows):
        np.testing.assert_allclose(batch[k], eeg_spectrogram(window), atol=1e-6)
    for wrong in (windows[0], np.stack(windows)[None], np.stack(windows)[..., :19]):  # one window, an extra axis, 19 columns
        with pytest.raises(ValueError, match=r"expected \(batch, samples, 20\) EEG windows"):
            eeg_spectrograms(wrong)


def test_kaggle_tiles_match_the_seed_on_real_spectrogram(kaggle_sample):
    spectrogram = read_spectrogram(kaggle_sample / "test_spectrograms" / "853520.parquet")
    ours = kaggle_tiles(spectrogram, 0)
    assert ours.shape == (128, 256, 4) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, notebook_kaggle_tiles(spectrogram, 0), atol=1e-5)
    assert (ours[:14] == 0).all() and (ours[-14:] == 0).all()  # frequency padding


def test_kaggle_tiles_regions_in_kaggle_order_and_offset(synthetic_root):
    train = pd.read_csv(synthetic_root / "train.csv")
    row = train.iloc[len(train) // 2]
    spectrogram = read_spectrogram(synthetic_root / "train_spectrograms" / f"{row.spectrogram_id}.parquet")
    offset = row.spectrogram_label_offset_seconds
    np.testing.assert_allclose(kaggle_tiles(spectrogram, offset), notebook_kaggle_tiles(spectrogram, offset), atol=1e-5)
    spectrogram[:, 101:201] = np.nan  # RL region missing: its tile (channel 1) becomes zeros, the others stay
    tiles = kaggle_tiles(spectrogram, offset)
    assert (tiles[..., 1] == 0).all() and np.abs(tiles[..., 0]).sum() > 0


def test_short_spectrogram_window_is_padded_not_an_error(kaggle_sample):
    spectrogram = read_spectrogram(kaggle_sample / "test_spectrograms" / "853520.parquet")[:250]
    tiles = kaggle_tiles(spectrogram, 0)
    assert tiles.shape == (128, 256, 4) and np.isfinite(tiles).all()
    assert (tiles[14:-14, 250 - 22:] == 0).all()  # the missing rows are zeros


def test_mel_filters_equal_librosa():
    import librosa

    from hms.features.eeg import mel_filters

    np.testing.assert_allclose(mel_filters(), librosa.filters.mel(sr=200, n_fft=1024, n_mels=128, fmin=0, fmax=20), rtol=1e-6, atol=1e-9)
