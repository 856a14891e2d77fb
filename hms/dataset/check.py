"""Validate a Kaggle-layout folder file by file, as a user checks a 26 GB download."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from ..constants import EEG_RATE, EEG_WINDOW_ROWS, SPEC_ROW_SECONDS, SPEC_WINDOW_ROWS, VOTE_COLUMNS
from .layout import DataError, eeg_path, read_eeg, read_spectrogram, read_test_csv, read_train_csv, spectrogram_path


@dataclass
class CheckReport:
    """What `check_folder` found: printable summary lines and every bad file with its reason."""

    lines: list[str] = field(default_factory=list)
    bad: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.bad


class FileJob(NamedTuple):
    """A file to check: its kind (eeg or spec), path, and the rows its labelled windows need."""

    kind: str
    path: str
    needed_rows: int


class FileCheck(NamedTuple):
    """What reading one file found."""

    path: str
    rows: int
    nan: int
    cells: int
    error: str | None


def _inspect(job: FileJob) -> FileCheck:
    """Read one parquet file fully."""
    path = job.path
    try:
        values = read_eeg(path) if job.kind == "eeg" else read_spectrogram(path)[:, 1:]
    except DataError as error:
        return FileCheck(path, 0, 0, 0, str(error).removeprefix(f"{path}: "))
    if len(values) < job.needed_rows:
        return FileCheck(path, len(values), 0, 0, f"{len(values)} rows, but a labelled window needs {job.needed_rows}")
    nan = int(np.isnan(values).sum())
    if values.size and nan == values.size:
        return FileCheck(path, len(values), nan, values.size, "every value is NaN: the file holds no signal")
    return FileCheck(path, len(values), nan, values.size, None)


def _jobs_for_train(root: Path, train) -> list[FileJob]:
    eeg_end = train.groupby("eeg_id")["eeg_label_offset_seconds"].max()
    spec_end = train.groupby("spectrogram_id")["spectrogram_label_offset_seconds"].max()
    jobs = [FileJob("eeg", str(eeg_path(root, i)), int(round(o * EEG_RATE)) + EEG_WINDOW_ROWS) for i, o in eeg_end.items()]
    jobs += [FileJob("spec", str(spectrogram_path(root, i)), int(o // SPEC_ROW_SECONDS) + SPEC_WINDOW_ROWS)
             for i, o in spec_end.items()]
    return jobs


def _jobs_for_test(root: Path, test) -> list[FileJob]:
    jobs = [FileJob("eeg", str(eeg_path(root, i, "test")), EEG_WINDOW_ROWS) for i in test["eeg_id"].unique()]
    jobs += [FileJob("spec", str(spectrogram_path(root, i, "test")), SPEC_WINDOW_ROWS) for i in test["spectrogram_id"].unique()]
    return jobs


def check_folder(root, workers: int | None = None, progress: bool = True) -> CheckReport:
    """Check train.csv/test.csv and every parquet file they name; NaN in signals is counted, not an error."""
    root = Path(root)
    report = CheckReport()
    jobs = []
    if not (root / "train.csv").exists() and not (root / "test.csv").exists():
        report.bad[str(root)] = "neither train.csv nor test.csv found: not a Kaggle-layout folder"
        return report
    for name, reader, planner in (("train.csv", read_train_csv, _jobs_for_train), ("test.csv", read_test_csv, _jobs_for_test)):
        if not (root / name).exists():
            continue
        try:
            table = reader(root)
        except DataError as error:
            report.bad[str(root / name)] = str(error).removeprefix(f"{root / name}: ")
            continue
        report.lines.append(_describe_table(name, table))
        jobs += planner(root, table)
    results = _run(jobs, workers, progress)
    for label in ("train_eegs", "train_spectrograms", "test_eegs", "test_spectrograms"):
        mine = [r for j, r in zip(jobs, results) if Path(j.path).parent.name == label]
        if not mine:
            continue
        nan = sum(r.nan for r in mine)
        cells = sum(r.cells for r in mine)
        rows = [r.rows for r in mine if r.error is None]
        share = nan / cells if cells else 0.0
        report.lines.append(
            f"{label}: {len(mine)} files, {len(mine) - len(rows)} bad, rows {min(rows, default=0)}-{max(rows, default=0)}, "
            f"NaN share {share:.2%}, files with NaN {sum(1 for r in mine if r.nan)}"
        )
    for result in results:
        if result.error is not None:
            report.bad[result.path] = result.error
    return report


def _describe_table(name: str, table) -> str:
    if name == "test.csv":
        return f"test.csv: {len(table)} rows, {table.eeg_id.nunique()} eeg_ids, {table.spectrogram_id.nunique()} spectrograms, {table.patient_id.nunique()} patients"
    raters = table[list(VOTE_COLUMNS)].sum(axis=1)
    return (
        f"train.csv: {len(table)} windows, {table.eeg_id.nunique()} eeg_ids, {table.spectrogram_id.nunique()} spectrograms, "
        f"{table.patient_id.nunique()} patients; votes per row min {raters.min()}, median {raters.median():g}, "
        f"max {raters.max()}, rows with >= 10 votes {(raters >= 10).mean():.1%}"
    )


def _run(jobs, workers, progress):
    workers = workers or os.cpu_count() or 1
    bar = dict(total=len(jobs), desc="checking files", unit="file", disable=not progress, mininterval=0.5)
    if workers == 1 or len(jobs) < 16:
        return [_inspect(j) for j in tqdm(jobs, **bar)]
    with ProcessPoolExecutor(workers) as pool:
        return list(tqdm(pool.map(_inspect, jobs, chunksize=8), **bar))
