"""A synthetic HMS dataset in Kaggle's exact layout, with known true class probabilities.

Each spectrogram_id is one simulated continuous recording; its train EEG files are excerpts of it
and its spectrogram is computed from it, so both views agree. Every eeg_id has a true probability
vector over the six classes; each class's pattern is mixed in with that strength, raters are drawn
like the real ones and their votes from the true probabilities.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..constants import CLASSES, CONSENSUS_NAMES, EEG_COLUMNS, EEG_RATE, SPEC_COLUMNS, TRAIN_COLUMNS, VOTE_COLUMNS
from ..metrics import kl_divergence
from . import signals

GENERATOR_VERSION = 3
META_DIR = "_synthetic"  # kept aside from Kaggle's files: metadata, true probabilities, the test answer key

# Raters per eeg_id in the real training votes (largest row total per eeg_id, data/train_votes.csv).
RATER_COUNTS = {1: 3048, 2: 1708, 3: 4930, 4: 375, 5: 923, 6: 114, 10: 97, 11: 320, 12: 690, 13: 1141, 14: 619,
                15: 1402, 16: 658, 17: 301, 18: 305, 19: 72, 20: 204, 21: 49, 22: 23, 23: 10, 24: 3, 25: 5, 26: 2,
                27: 1, 28: 1}
# The real share of each class in the votes (per eeg_id), used for the dominant class.
CLASS_PRIOR = np.array([0.1528, 0.1423, 0.1042, 0.0655, 0.1151, 0.4201])
LEAD_SECONDS = 281  # background before the first excerpt: every 10-minute spectrogram window fits, at an even offset
TRAIL_SECONDS = 300


@dataclass(frozen=True)
class SynthSpec:
    """Size and seed of a synthetic dataset; the same spec always gives the same files."""

    eegs: int = 300
    patients: int = 60
    seed: int = 0
    test_eegs: int | None = None  # default: a tenth of eegs, at least 8
    signal: float = 1.0  # amplitude of the class patterns over the background (lower: a harder dataset)
    recordings: int | None = None  # spectrogram_ids (continuous recordings); default: eegs / 5, at least patients
    extra_seconds: int = 22  # each EEG lasts 50 s plus up to this (even); labelled windows per eeg_id grow with it

    @property
    def n_recordings(self) -> int:
        return self.recordings if self.recordings is not None else min(self.eegs, max(self.patients, int(np.ceil(self.eegs / 5))))

    @property
    def n_test(self) -> int:
        return self.test_eegs if self.test_eegs is not None else max(8, self.eegs // 10)


def _true_probabilities(rng, base_class: int) -> np.ndarray:
    """A class-probability vector: mostly one class (the recording's, often), the rest spread out."""
    dominant = base_class if rng.uniform() < 0.6 else rng.choice(len(CLASSES), p=CLASS_PRIOR)
    strength = rng.uniform(0.55, 0.98)
    p = (1 - strength) * rng.dirichlet(np.full(len(CLASSES), 0.6))
    p[dominant] += strength
    return p


def _raters(rng) -> int:
    counts = np.array(list(RATER_COUNTS.values()), dtype=float)
    return int(rng.choice(list(RATER_COUNTS), p=counts / counts.sum()))


def _simulate(rng, seconds: int, segments, nan_runs: bool = True, signal: float = 1.0) -> np.ndarray:
    """A recording of `seconds` with each (start_s, length_s, p) segment's class patterns mixed in,
    scaled by `signal`."""
    recording = signals.background(rng, seconds)
    for start, length, p in segments:
        i, n = start * EEG_RATE, length * EEG_RATE
        env = signals.envelope(n)[:, None]
        for k, kind in enumerate(CLASSES):
            if p[k] > 0.05:
                recording[i:i + n, :-1] += signal * p[k] * env * signals.pattern(rng, kind, n)
        if nan_runs:
            _add_nan(rng, recording[i:i + n])
    return np.round(recording, 2).astype(np.float32)


def _add_nan(rng, segment: np.ndarray) -> None:
    """NaN as in real EEG: occasional runs over all channels, rarely a whole dead channel."""
    n = len(segment)
    if rng.uniform() < 0.12:
        length = int(rng.uniform(0.5, 6) * EEG_RATE)
        start = rng.integers(0, max(1, n - length))
        segment[start:start + length] = np.nan
    if rng.uniform() < 0.03:
        segment[:, rng.integers(0, len(EEG_COLUMNS) - 1)] = np.nan


def _write_parquet(path: Path, values: np.ndarray, columns) -> None:
    frame = pd.DataFrame(values, columns=list(columns)).astype(np.float32)
    frame.to_parquet(path, index=False)


def _unique_ids(rng, n, low, high) -> np.ndarray:
    ids = np.unique(rng.integers(low, high, size=n * 3))
    rng.shuffle(ids)
    return ids[:n].astype(np.int64)


def _train_recording(job):
    """Simulate one training recording: write its EEG excerpts and its spectrogram; return train.csv rows
    (without label ids) and the true probabilities with the votes of each of its eeg_ids."""
    out, seq, members, spectrogram_id, patient_id, base_class, signal, extra_seconds = job
    out, rng = Path(out), np.random.default_rng(seq)
    segments, rows, truth, cursor = [], [], [], LEAD_SECONDS
    for eeg_id in members:
        extra = 2 * int(rng.integers(0, extra_seconds // 2 + 1))
        p = _true_probabilities(rng, base_class)
        segments.append((cursor, 50 + extra, p))
        votes = rng.multinomial(_raters(rng), p)
        offsets = np.sort(rng.choice(np.arange(0, extra + 1, 2), size=1 + rng.binomial(extra // 2, 0.5), replace=False))
        for k, offset in enumerate(offsets):
            # The 10-minute spectrogram window is centred on the 50 s EEG window.
            rows.append((eeg_id, k, float(offset), spectrogram_id, 0, float(cursor + offset + 25 - 300), patient_id,
                         CONSENSUS_NAMES[int(np.argmax(votes))], *votes))
        truth.append((eeg_id, "train", *p, *votes))
        cursor += 50 + extra + 2 * int(rng.integers(5, 20))
    recording = _simulate(rng, cursor - 2 * 5 + TRAIL_SECONDS, segments, signal=signal)
    for eeg_id, (start, length, _) in zip(members, segments):
        _write_parquet(out / "train_eegs" / f"{eeg_id}.parquet", recording[start * EEG_RATE:(start + length) * EEG_RATE], EEG_COLUMNS)
    _write_spectrogram(out / "train_spectrograms" / f"{spectrogram_id}.parquet", recording)
    return rows, truth


def _test_recording(job):
    """One test recording: a 10-minute spectrogram and the 50 s EEG at its centre, as Kaggle's test files."""
    out, seq, eeg_id, spectrogram_id, patient_id, signal = job
    out, rng = Path(out), np.random.default_rng(seq)
    p = _true_probabilities(rng, rng.choice(len(CLASSES), p=CLASS_PRIOR))
    recording = _simulate(rng, 600, [(275, 50, p)], nan_runs=False, signal=signal)
    _write_parquet(out / "test_eegs" / f"{eeg_id}.parquet", recording[275 * EEG_RATE:325 * EEG_RATE], EEG_COLUMNS)
    _write_spectrogram(out / "test_spectrograms" / f"{spectrogram_id}.parquet", recording)
    return (spectrogram_id, eeg_id, patient_id), (eeg_id, "test", *p, *rng.multinomial(_raters(rng), p))


def _map(fn, jobs, workers, description):
    """fn over jobs in order, in `workers` processes; results do not depend on the worker count."""
    from tqdm import tqdm

    bar = dict(total=len(jobs), desc=description, unit="rec", disable=description is None, mininterval=0.5)
    if workers == 1 or len(jobs) < 4:
        return [fn(job) for job in tqdm(jobs, **bar)]
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return list(tqdm(pool.map(fn, jobs), **bar))


def generate(out_dir, spec: SynthSpec = SynthSpec(), progress: bool = False, workers: int | None = None) -> dict:
    """Write the dataset of `spec` to `out_dir` (train/test files, sample_submission.csv and `_synthetic/`),
    simulating recordings in `workers` processes (default: all cores); the files do not depend on it."""
    workers = workers or os.cpu_count() or 1
    started = time.perf_counter()
    if spec.eegs < 1 or spec.patients < 1 or spec.patients > spec.eegs:
        raise ValueError(f"need 1 <= patients <= eegs, got eegs={spec.eegs} patients={spec.patients}")
    if not spec.signal > 0:
        raise ValueError(f"signal must be positive, got {spec.signal}")
    if not spec.patients <= spec.n_recordings <= spec.eegs:
        raise ValueError(f"need patients <= recordings <= eegs, got recordings={spec.n_recordings}")
    if spec.extra_seconds < 0 or spec.extra_seconds % 2:
        raise ValueError(f"extra_seconds must be even and >= 0, got {spec.extra_seconds}")
    out = Path(out_dir)
    for sub in ("train_eegs", "train_spectrograms", "test_eegs", "test_spectrograms", META_DIR):
        (out / sub).mkdir(parents=True, exist_ok=True)
    root_seq = np.random.SeedSequence([spec.seed, GENERATOR_VERSION])
    layout_rng, signal_seq = np.random.default_rng(root_seq.spawn(1)[0]), root_seq.spawn(2)[1]

    n_rec = spec.n_recordings
    patient_ids = _unique_ids(layout_rng, spec.patients + spec.n_test, 1, 65_536)
    rec_patient = np.concatenate([np.arange(spec.patients), layout_rng.integers(0, spec.patients, n_rec - spec.patients)])
    eeg_rec = np.concatenate([np.arange(n_rec), layout_rng.integers(0, n_rec, spec.eegs - n_rec)])
    eeg_ids = _unique_ids(layout_rng, spec.eegs + spec.n_test, 1_000_000, 4_294_967_295)
    spec_ids = _unique_ids(layout_rng, n_rec + spec.n_test, 1_000, 2_147_483_647)
    base_class = layout_rng.choice(len(CLASSES), size=n_rec, p=CLASS_PRIOR)

    seqs = signal_seq.spawn(n_rec + spec.n_test)
    train_jobs = [(str(out), seqs[r], eeg_ids[:spec.eegs][eeg_rec == r], spec_ids[r], patient_ids[rec_patient[r]], base_class[r],
                   spec.signal, spec.extra_seconds) for r in range(n_rec)]
    test_jobs = [(str(out), seqs[n_rec + t], eeg_ids[spec.eegs + t], spec_ids[n_rec + t], patient_ids[spec.patients + t], spec.signal)
                 for t in range(spec.n_test)]
    train_results = _map(_train_recording, train_jobs, workers, "synthetic train recordings" if progress else None)
    test_results = _map(_test_recording, test_jobs, workers, "synthetic test recordings" if progress else None)

    rows = [row for result in train_results for row in result[0]]
    truth = [row for result in train_results for row in result[1]] + [result[1] for result in test_results]
    train = pd.DataFrame(rows, columns=[c for c in TRAIN_COLUMNS if c != "label_id"])
    train.insert(TRAIN_COLUMNS.index("label_id"), "label_id", _unique_ids(layout_rng, len(train), 1_000_000, 4_294_967_295))
    train["spectrogram_sub_id"] = train.groupby("spectrogram_id").cumcount().to_numpy()
    train.to_csv(out / "train.csv", index=False)
    test_rows = [result[0] for result in test_results]
    test = pd.DataFrame(test_rows, columns=["spectrogram_id", "eeg_id", "patient_id"])
    test.to_csv(out / "test.csv", index=False)
    uniform = pd.DataFrame({"eeg_id": test.eeg_id, **{c: 1 / len(CLASSES) for c in VOTE_COLUMNS}})
    uniform.to_csv(out / "sample_submission.csv", index=False)

    truth = pd.DataFrame(truth, columns=["eeg_id", "split", *(f"p_{c}" for c in CLASSES), *VOTE_COLUMNS])
    truth.to_csv(out / META_DIR / "truth.csv", index=False)
    truth[truth.split == "test"][["eeg_id", *VOTE_COLUMNS]].to_csv(out / META_DIR / "test_answers.csv", index=False)
    meta = {"generator_version": GENERATOR_VERSION, "eegs": spec.eegs, "patients": spec.patients, "seed": spec.seed,
            "test_eegs": spec.n_test, "signal": spec.signal, "recordings": n_rec,
            "extra_seconds": spec.extra_seconds, "train_windows": len(train), "spectrograms": int(train.spectrogram_id.nunique()),
            **reference_scores(truth), "seconds": round(time.perf_counter() - started, 2)}
    # meta.json is written last: its presence marks a complete dataset.
    (out / META_DIR / "meta.json").write_text(json.dumps(meta, indent=2))
    return meta


def _write_spectrogram(path: Path, recording: np.ndarray) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN frames give NaN rows, as Kaggle's do
        _write_parquet(path, signals.kaggle_spectrogram(recording), SPEC_COLUMNS)


def reference_scores(truth: pd.DataFrame) -> dict:
    """Prior baseline (train class prior for everyone) and Bayes floor (true probabilities) KL, per split."""
    votes = truth[list(VOTE_COLUMNS)].to_numpy(float)
    y = votes / votes.sum(axis=1, keepdims=True)
    p = truth[[f"p_{c}" for c in CLASSES]].to_numpy(float)
    train = (truth.split == "train").to_numpy()
    prior = y[train].mean(axis=0)
    scores = {}
    for name, mask in (("", train), ("test_", ~train)):
        if mask.any():
            scores[f"{name}prior_kl"] = round(kl_divergence(y[mask], np.tile(prior, (mask.sum(), 1))), 4)
            scores[f"{name}bayes_floor_kl"] = round(kl_divergence(y[mask], p[mask]), 4)
    return scores


def read_meta(root) -> dict:
    """The metadata of a synthetic dataset at `root` (prior baseline, Bayes floor, size, seed)."""
    path = Path(root) / META_DIR / "meta.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not a complete synthetic dataset (no metadata)")
    return json.loads(path.read_text())


def ensure_dataset(root, spec: SynthSpec = SynthSpec(), progress: bool = True) -> Path:
    """The embedded default: generate `spec` at `root` on first use, reuse it afterwards."""
    from ..features.files import building

    root = Path(root)
    meta_path = root / META_DIR / "meta.json"
    if not meta_path.is_file():  # two runs started at once on a fresh clone: one generates, the other waits for it
        root.parent.mkdir(parents=True, exist_ok=True)
        with building(root.parent, f"the synthetic dataset {root.name}"):
            if not meta_path.is_file():
                partial = root.with_name(root.name + ".partial")
                shutil.rmtree(partial, ignore_errors=True)
                generate(partial, spec, progress=progress)
                if root.exists():
                    shutil.rmtree(root)
                partial.rename(root)
    meta = json.loads(meta_path.read_text())
    if (meta.get("generator_version"), meta.get("eegs"), meta.get("patients"), meta.get("seed"), meta.get("test_eegs"),
            meta.get("signal", 1.0), meta.get("spectrograms"), meta.get("extra_seconds", 22)) != (
            GENERATOR_VERSION, spec.eegs, spec.patients, spec.seed, spec.n_test, spec.signal, spec.n_recordings, spec.extra_seconds):
        raise FileExistsError(f"{root} holds a different synthetic dataset ({meta_path}); choose another data.root")
    return root
