"""The seed's formulas written the seed's way (librosa per pair, pandas per region), to test against."""

import numpy as np

from hms.constants import CHAINS, EEG_COLUMNS, REGIONS


def librosa_eeg_spectrogram(eeg: np.ndarray) -> np.ndarray:
    import librosa

    img = np.zeros((128, 256, 4), np.float32)
    for k, region in enumerate(REGIONS):
        for a, b in CHAINS[region]:
            x = eeg[:, EEG_COLUMNS.index(a)] - eeg[:, EEG_COLUMNS.index(b)]
            m = float(np.nanmean(x)) if not np.isnan(x).all() else 0.0
            x = np.where(np.isnan(x), m, x)
            mel = librosa.feature.melspectrogram(y=x, sr=200, hop_length=len(x) // 256, n_fft=1024, n_mels=128,
                                                 fmin=0, fmax=20, win_length=128)
            width = (mel.shape[1] // 32) * 32
            db = librosa.power_to_db(mel, ref=np.max).astype(np.float32)[:, :width]
            img[:, :, k] += (db + 40) / 40
        img[:, :, k] /= 4.0
    return img


def seed_kaggle_tiles(spectrogram: np.ndarray, offset: float) -> np.ndarray:
    start = int(offset // 2)
    x = np.zeros((128, 256, 4), np.float32)
    for k in range(4):
        img = spectrogram[start:start + 300, 1 + k * 100:1 + (k + 1) * 100].T
        img = np.clip(img, np.exp(-4), np.exp(8))
        img = np.log(img)
        m, s = np.nanmean(img.flatten()), np.nanstd(img.flatten())
        img = (img - m) / (s + 1e-6)
        img = np.nan_to_num(img, nan=0.0)
        x[14:-14, :, k] = img[:, 22:-22]
    return x
