"""Raw-EEG input for 1D models (`input=eeg1d`): each labelled 50 s window as the 16 bipolar pairs of the
seed's four chains, band-passed, downsampled, clipped and scaled.

Why the 16 chain pairs (LL, RL, LP, RP; 4 pairs each) and not the 18-pair double banana: they are the pairs
the spectrogram side already uses (`hms.features.eeg.PAIRS`, the same NaN filling), so a 1D and a 2D model
see the same montage, the hemisphere swap maps LL<->RL and LP<->RP as it does for the tiles, and the per-file
cache already stores exactly the 16 electrodes these pairs need. The double banana's two extra midline pairs
(Fz-Cz, Cz-Pz) would need Fz, Cz and Pz as well.

Processing of each window, in order: pair differences with NaN filled by the pair's mean (as the spectrogram
path); a zero-phase Butterworth band-pass (`scipy.signal.sosfiltfilt`, order 4, `low`-`high` Hz); every
`200 / rate`-th sample (the band-pass has already removed what would alias: `high` < rate / 2); clipped to
+-`clip` microvolts and divided by `scale`.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..constants import EEG_COLUMNS, EEG_RATE, EEG_WINDOW_ROWS, EEG_WINDOW_SECONDS, REGIONS
from .eeg import PAIRS, bipolar_pairs
from .files import CHAIN_INDEX, WindowTiles

PAIR_NAMES = tuple(f"{r}{i}" for r in REGIONS for i in range(len(PAIRS) // len(REGIONS)))


@dataclass(frozen=True)
class SignalOptions:
    """How a window becomes a (samples, 16) signal; `input.signal` in a config."""

    rate: int = 50        # samples per second after downsampling (a divisor of 200)
    low: float = 0.5      # band-pass edges, Hz
    high: float = 20.0
    clip: float = 1024.0  # microvolts
    scale: float = 32.0   # the clipped signal is divided by this

    def __post_init__(self):
        if self.rate < 1 or EEG_RATE % self.rate:
            raise ValueError(f"input.signal.rate={self.rate}: must divide the EEG's {EEG_RATE} Hz")
        if not 0 < self.low < self.high < self.rate / 2:
            raise ValueError(f"input.signal: need 0 < low ({self.low}) < high ({self.high}) < rate / 2 ({self.rate / 2}),"
                             " or the downsampling aliases")
        if not (self.clip > 0 and self.scale > 0):
            raise ValueError(f"input.signal: clip ({self.clip}) and scale ({self.scale}) must be positive")

    @property
    def samples(self) -> int:
        return EEG_WINDOW_SECONDS * self.rate


@lru_cache(maxsize=8)
def _band_pass(low: float, high: float):
    from scipy.signal import butter

    return butter(4, [low, high], btype="bandpass", fs=EEG_RATE, output="sos")


def signal_windows(windows: np.ndarray, options: SignalOptions = SignalOptions()) -> np.ndarray:
    """(batch, options.samples, 16) float32 from (batch, 10000, 20) EEG windows (Kaggle's 20 columns)."""
    from scipy.signal import sosfiltfilt

    windows = np.asarray(windows, np.float32)
    if windows.ndim != 3 or windows.shape[2] != len(EEG_COLUMNS):
        raise ValueError(f"expected (batch, samples, 20) EEG windows, got shape {windows.shape}")
    pairs = bipolar_pairs(windows)  # (batch, 16, samples), NaN filled
    filtered = sosfiltfilt(_band_pass(options.low, options.high), pairs.astype(np.float64), axis=-1)
    step = EEG_RATE // options.rate
    x = np.clip(filtered[..., ::step], -options.clip, options.clip) / options.scale
    return np.ascontiguousarray(np.moveaxis(x, 1, 2), dtype=np.float32)


class SignalWindows(WindowTiles):
    """The signals of labelled windows, made from the per-file EEG cache when read: indexable like an array
    (`signals[rows]` -> (len(rows), samples, 16) float32, `.shape`, `.dtype`), as `WindowTiles` is for tiles,
    whose checks (`problems`: a bad file, a window past the file's end) it shares.

    A window's signal is the same every time it is read (augmentation comes after), so the first `memo_bytes`
    of them (default 1 GiB: 6,700 windows at 50 Hz) are kept in memory once made: from the second epoch a run
    of a few thousand windows reads them back instead of band-passing 16 x 10,000 samples again (about 8 ms
    a window on one core, as much as the 1D network's own step). 0 turns it off."""

    MEMO_BYTES = 1 << 30

    def __init__(self, files, file_ids: np.ndarray, offsets: np.ndarray, options: SignalOptions,
                 memo_bytes: int | None = None):
        if files.kind != "eeg":
            raise ValueError(f"raw-EEG signals are cut from EEG files, not {files.kind} files")
        super().__init__(files, file_ids, offsets, (0, 0))
        self.options = options
        self.shape = (len(self.file_ids), options.samples, len(PAIRS))
        self.ndim = 3
        self._start_memo(self.MEMO_BYTES if memo_bytes is None else memo_bytes)

    def _start_memo(self, memo_bytes: int) -> None:
        self._memo: dict[int, np.ndarray] = {}
        self._memo_room = memo_bytes // (self.options.samples * len(PAIRS) * 4)
        self._lock = threading.Lock()

    def with_memo(self, memo_bytes: int) -> "SignalWindows":
        """The same windows, with an empty memo of `memo_bytes` of its own (0: every read makes its windows)."""
        other = copy.copy(self)
        other._start_memo(memo_bytes)
        return other

    def __getitem__(self, rows):
        scalar = np.ndim(rows) == 0
        rows = np.atleast_1d(np.arange(self.shape[0])[rows])
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        memo, todo = self._memo, []
        for k, r in enumerate(rows):  # one lookup a row: kept windows are copied, the others made below
            kept = memo.get(int(r))
            if kept is None:
                todo.append(k)
            else:
                out[k] = kept
        for start in range(0, len(todo), 16):  # a few windows at a time: memory bounded per call
            part = todo[start:start + 16]
            windows = np.zeros((len(part), EEG_WINDOW_ROWS, len(EEG_COLUMNS)), np.float32)
            for j, k in enumerate(part):
                r = rows[k]
                windows[j][:, CHAIN_INDEX] = self.files.read(int(self.file_ids[r]), int(self.first[r]), EEG_WINDOW_ROWS)
            out[part] = signal_windows(windows, self.options)
            with self._lock:  # batch threads share the memo
                for k in part:
                    if self._memo_room > 0 and int(rows[k]) not in memo:
                        memo[int(rows[k])] = out[k].copy()
                        self._memo_room -= 1
        return out[0] if scalar else out


class PairWindows(WindowTiles):
    """Each labelled window's 16 chain pairs at the EEG's own 200 Hz, NaN filled by each pair's mean as the
    spectrogram path fills them (`bipolar_pairs`), made from the per-file EEG cache when read: (len(rows), 10000, 16)
    float32. What a model that computes its own spectrograms (`input=eeg_layer`) reads; nothing else is done here."""

    def __init__(self, files, file_ids: np.ndarray, offsets: np.ndarray):
        if files.kind != "eeg":
            raise ValueError(f"EEG pairs are cut from EEG files, not {files.kind} files")
        super().__init__(files, file_ids, offsets, (0, 0))
        self.shape = (len(self.file_ids), EEG_WINDOW_ROWS, len(PAIRS))
        self.ndim = 3

    def __getitem__(self, rows):
        scalar = np.ndim(rows) == 0
        rows = np.atleast_1d(np.arange(self.shape[0])[rows])
        out = np.empty((len(rows), *self.shape[1:]), np.float32)
        for start in range(0, len(rows), 16):  # a few windows at a time: memory bounded per call
            part = rows[start:start + 16]
            windows = np.zeros((len(part), EEG_WINDOW_ROWS, len(EEG_COLUMNS)), np.float32)
            for j, r in enumerate(part):
                windows[j][:, CHAIN_INDEX] = self.files.read(int(self.file_ids[r]), int(self.first[r]), EEG_WINDOW_ROWS)
            out[start:start + len(part)] = np.moveaxis(bipolar_pairs(windows), 1, 2)
        return out[0] if scalar else out
