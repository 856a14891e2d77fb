"""The public notebook's formulas written its way (librosa per pair, pandas per region): the reference the fast ones are checked against.

Nothing here comes from `hms`: the electrode chains are spelled out as the public notebook has them
(Chris Deotte, "HMS - EfficientNetB0 Starter", `NAMES` and `FEATS`), and the EEG is read by column name."""

import numpy as np
import pandas as pd

# The public notebook's chains, in its order and under its names. Its "RP" is the right *lateral*
# chain and its "RR" the right parasagittal one.
NOTEBOOK_NAMES = ["LL", "LP", "RP", "RR"]
NOTEBOOK_FEATS = [["Fp1", "F7", "T3", "T5", "O1"],
                  ["Fp1", "F3", "C3", "P3", "O1"],
                  ["Fp2", "F8", "T4", "T6", "O2"],
                  ["Fp2", "F4", "C4", "P4", "O2"]]
# hms orders its EEG tiles as Kaggle orders its spectrogram's regions (HMS_DATA.md): left lateral,
# right lateral, left parasagittal, right parasagittal = the notebook's chains 0, 2, 1, 3.
NOTEBOOK_TO_KAGGLE_ORDER = [0, 2, 1, 3]


def librosa_eeg_spectrogram(eeg: pd.DataFrame, order=NOTEBOOK_TO_KAGGLE_ORDER) -> np.ndarray:
    """The notebook's EEG spectrogram of a 50 s (10,000-row) EEG frame, channels in `order` of the notebook's chains."""
    import librosa

    img = np.zeros((128, 256, 4), np.float32)
    for k, chain in enumerate(order):
        electrodes = NOTEBOOK_FEATS[chain]
        for kk in range(4):
            x = (eeg[electrodes[kk]] - eeg[electrodes[kk + 1]]).to_numpy(np.float64)
            m = float(np.nanmean(x)) if not np.isnan(x).all() else 0.0
            x = np.where(np.isnan(x), m, x)
            mel = librosa.feature.melspectrogram(y=x, sr=200, hop_length=len(x) // 256, n_fft=1024, n_mels=128,
                                                 fmin=0, fmax=20, win_length=128)
            width = (mel.shape[1] // 32) * 32
            db = librosa.power_to_db(mel, ref=np.max).astype(np.float32)[:, :width]
            img[:, :, k] += (db + 40) / 40
        img[:, :, k] /= 4.0
    return img


def notebook_kaggle_tiles(spectrogram: np.ndarray, offset: float) -> np.ndarray:
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
