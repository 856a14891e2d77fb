"""The per-file cache (`data.cache=files`): what the labelled windows are cut from, stored once per file.

- EEG: each file's 16 chain electrodes (the bipolar chains use no other; Fz, Cz, Pz and EKG are in no chain).
- Spectrogram: each file's 400 columns (4 regions x 100 bins; the time column is not used), clipped first to
  the range the tiles keep ([exp(-4), exp(8)], see `kaggle_tiles`: the clip is its first step), as float16.

EEG values stay float32: the seed's log-mel spectrogram is not robust to float16 input (cells 50 dB below a
pair's peak move by up to 0.018, where the contract allows 1e-3), so the EEG tiles made from this cache are
the tile cache's own, bit for bit (both round tiles to float16). Spectrogram power as float16 (relative error
2**-11 before the log) moves its tiles by at most about 2e-3, and takes it to 0.38x of its parquet instead of
0.65x losslessly. NaN stays NaN in both. Chunks of rows are stored byte-shuffled (every value's bytes in planes)
and compressed with zstd: the 16 chain columns of a synthetic EEG take about 40 bytes a sample where its
parquet file holds 85 for 20 columns.

A window's tiles are made when a batch asks for them (`WindowTiles`), with the same functions that fill the
tile cache: a window is a slice of its file, and the overlapping windows of one eeg_id share their file's bytes.

Layout of a cache folder: `part-*.bin` (compressed chunks) each with `part-*.parquet` (where each chunk of each
file is; written last, so a part without it is ignored), `meta.json`. Worker processes build it file by file
(memory does not grow with the dataset); a killed build keeps its finished parts and continues where it
stopped; once built, the folder is only read, so any number of trainers may map it at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from .. import logs
from ..constants import EEG_COLUMNS, EEG_RATE, EEG_WINDOW_ROWS, SPEC_COLUMNS, SPEC_ROW_SECONDS, SPEC_WINDOW_ROWS
from ..dataset.layout import DataError, read_eeg, read_spectrogram
from .cache import SOURCES, FeatureOptions, Job, _create_folder, _jobs, _resize, _run, _stamp, checked
from .eeg import CHAIN_CHANNELS, eeg_spectrograms
from .kaggle import kaggle_tiles

FILES_VERSION = 1
CODEC = "zstd"
STORED = {"eeg": np.dtype(np.float32), "kaggle": np.dtype(np.float16)}  # see the module's docstring
CHUNK_ROWS = {"eeg": 2000, "kaggle": 64}  # 10 s of EEG, about 2 min of spectrogram: a window reads 6 or 7 chunks
LOW, HIGH = np.float32(np.exp(-4)), np.float32(np.exp(8))
CHAIN_INDEX = [EEG_COLUMNS.index(c) for c in CHAIN_CHANNELS]
log = logs.get(__name__)
PART_COLUMNS = ["file_id", "chunk", "rows", "offset", "nbytes", "error"]


def columns_of(kind: str) -> int:
    return len(CHAIN_CHANNELS) if kind == "eeg" else len(SPEC_COLUMNS) - 1


def file_values(kind: str, path: Path) -> np.ndarray:
    """The float32 rows a file contributes: its chain electrodes (EEG) or its clipped spectrogram columns."""
    if kind == "eeg":
        return np.ascontiguousarray(read_eeg(path, only=CHAIN_CHANNELS)[:, CHAIN_INDEX])
    return np.ascontiguousarray(np.clip(read_spectrogram(path)[:, 1:], LOW, HIGH))  # NaN stays NaN


def pack(values: np.ndarray) -> bytes:
    """(rows, columns) array to compressed bytes: byte planes (every value's first byte, then every second ...), zstd."""
    import pyarrow as pa

    size = values.dtype.itemsize
    planes = np.ascontiguousarray(values.view(np.uint8).reshape(*values.shape, size).transpose(2, 0, 1))
    return pa.Codec(CODEC).compress(planes.tobytes(), asbytes=True)


def unpack(blob, rows: int, columns: int, dtype) -> np.ndarray:
    """The inverse of `pack`, as float32."""
    import pyarrow as pa

    dtype = np.dtype(dtype)
    raw = pa.Codec(CODEC).decompress(blob, rows * columns * dtype.itemsize, asbytes=True)
    planes = np.frombuffer(raw, np.uint8).reshape(dtype.itemsize, rows, columns)
    values = np.ascontiguousarray(planes.transpose(1, 2, 0)).view(dtype).reshape(rows, columns)
    return values.astype(np.float32, copy=False)


class Slot(NamedTuple):
    """One file of a job (`cache.Job.groups`): the progress bar counts files, so one row each."""

    file_id: int
    rows: np.ndarray


def _work(job: Job) -> list[tuple[str, str | None]]:
    """Compress a job's files into a new part; its table is renamed into place last (the part's commit)."""
    from threadpoolctl import threadpool_limits

    folder = Path(job.folder)
    name = f"part-{uuid.uuid4().hex}"
    records, report, offset = [], [], 0
    step = CHUNK_ROWS[job.kind]
    with threadpool_limits(1), open(folder / f"{name}.bin", "wb") as out:
        for slot in job.groups:
            path = SOURCES[job.kind].path(job.root, slot.file_id, job.split)
            try:
                values = file_values(job.kind, path).astype(STORED[job.kind], copy=False)
            except DataError as error:
                records.append((slot.file_id, -1, 0, 0, 0, str(error)))
                report.append((str(slot.file_id), str(error)))
                continue
            for chunk, start in enumerate(range(0, max(len(values), 1), step)):
                blob = pack(values[start:start + step])
                out.write(blob)
                records.append((slot.file_id, chunk, len(values[start:start + step]), offset, len(blob), ""))
                offset += len(blob)
            report.append((str(slot.file_id), None))
        out.flush()
        os.fsync(out.fileno())
    table = pd.DataFrame(records, columns=PART_COLUMNS).astype({"file_id": "int64", "chunk": "int64", "rows": "int64",
                                                                 "offset": "int64", "nbytes": "int64"})
    staging = folder / f"{name}.parquet.partial"
    table.to_parquet(staging)
    staging.rename(folder / f"{name}.parquet")
    return report


def files_key(root, split: str, kind: str, files: np.ndarray) -> str:
    """A digest of what a per-file cache holds: data root, split, kind, every file's id and stamp, the version."""
    root = Path(root).resolve()
    stamps = [_stamp(SOURCES[kind].path(root, int(f), split)) for f in files]
    digest = json.dumps([FILES_VERSION, CODEC, STORED[kind].name, CHUNK_ROWS[kind], str(root), split, kind, files.tolist(), stamps])
    return hashlib.sha256(digest.encode()).hexdigest()[:16]


class FileCache:
    """A per-file cache of one kind: `read(file_id, first, count)` gives rows of a file; `bad` its bad files."""

    def __init__(self, folder, kind: str):
        self.path, self.kind, self.columns = Path(folder), kind, columns_of(kind)
        tables = [pd.read_parquet(p).assign(part=p.stem) for p in sorted(self.path.glob("part-*.parquet"))]
        table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=[*PART_COLUMNS, "part"])
        done = table[table.chunk >= 0].drop_duplicates(["file_id", "chunk"], keep="last")  # a file re-read after a crash
        self.chunks = done.sort_values(["file_id", "chunk"]).reset_index(drop=True)
        self.rows = self.chunks.groupby("file_id").rows.sum()
        failed = table[(table.chunk < 0) & ~table.file_id.isin(self.rows.index)]
        self.bad = failed.drop_duplicates("file_id", keep="last").set_index("file_id").error
        first = (self.chunks.groupby("file_id").cumcount() == 0).to_numpy()
        self._first_chunk = dict(zip(self.chunks.file_id.to_numpy()[first].tolist(), np.flatnonzero(first).tolist()))
        self._length = self.rows.to_dict()
        self._part = self.chunks.part.to_numpy()
        self._offset, self._nbytes = self.chunks.offset.to_numpy(np.int64), self.chunks.nbytes.to_numpy(np.int64)
        self._rows = self.chunks.rows.to_numpy(np.int64)
        self._parts: dict[str, np.ndarray] = {}

    def _blob(self, part: str, offset: int, nbytes: int):
        data = self._parts.get(part)
        if data is None:
            data = self._parts[part] = np.memmap(self.path / f"{part}.bin", np.uint8, mode="r")
        return data[offset:offset + nbytes]

    def read(self, file_id: int, first: int, count: int) -> np.ndarray:
        """Rows [first, first + count) of a file, float32, cut short at the file's end."""
        step = CHUNK_ROWS[self.kind]
        start = self._first_chunk[file_id]
        last = min(first + count, self._length[file_id])
        pieces = []
        for chunk in range(first // step, (last - 1) // step + 1) if last > first else ():
            i = start + chunk
            pieces.append(unpack(self._blob(self._part[i], self._offset[i], self._nbytes[i]), self._rows[i], self.columns,
                                 STORED[self.kind]))
        if not pieces:
            return np.empty((0, self.columns), np.float32)
        values = np.concatenate(pieces) if len(pieces) > 1 else pieces[0]
        skip = first - (first // step) * step
        return values[skip:skip + max(0, last - first)]


def build_files(root, split: str, kind: str, files, options: FeatureOptions) -> FileCache:
    """Build (or finish, or just open) the per-file cache of `kind` for the data files `files`."""
    files = np.unique(np.asarray(files, np.int64))
    folder = Path(options.cache_dir) / f"{split}-{kind}-files-{files_key(root, split, kind, files)}"
    if not folder.exists():
        _create_folder(folder, lambda partial: None, {"root": str(Path(root).resolve()), "split": split, "kind": kind,
                                                      "files": len(files), "version": FILES_VERSION, "codec": CODEC})
    cache = FileCache(folder, kind)
    if all(f in cache.rows.index for f in files):
        return cache
    with building(folder):  # runs starting together (a sweep's workers) read each file once, not once each
        cache = FileCache(folder, kind)
        todo = [int(f) for f in files if f not in cache.rows.index]  # bad files are read again, never trusted
        if todo:
            jobs = _jobs(folder, kind, str(root), split, (), [Slot(f, np.array([0])) for f in todo], options.workers)
            _run(jobs, options, len(todo), f"{split} files ({kind})", work=_work)
            cache = FileCache(folder, kind)
    return cache


@contextlib.contextmanager
def building(folder: Path, what: str = "this cache"):
    """One builder of what `folder` holds at a time, among the processes of this machine (an advisory lock in it;
    a lock that a file system does not support is only a lost saving for the cache: parts are keyed, so two
    builders never make a wrong cache, only a second copy of a file's chunks)."""
    import fcntl

    with open(folder / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info(f"{folder}: another run is building {what}; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        except OSError:
            pass
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)


class WindowTiles:
    """The tiles of labelled windows, made from a per-file cache when they are read: indexable like the tile
    cache's array (`tiles[rows]`, `.shape`, `.dtype`), so batches, baselines and predictions take either."""

    def __init__(self, files: FileCache, file_ids: np.ndarray, offsets: np.ndarray, tile):
        self.files, self.tile = files, tuple(tile)
        self.file_ids = np.asarray(file_ids, np.int64)
        offsets = np.asarray(offsets, np.float64)
        if files.kind == "eeg":
            self.first = np.round(offsets * EEG_RATE).astype(np.int64)
        else:
            self.first = (offsets // SPEC_ROW_SECONDS).astype(np.int64)
        self.shape = (len(self.file_ids), *self.tile, 4)
        self.dtype = np.dtype(np.float32)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    @cached_property
    def problems(self) -> dict[int, tuple[int, str]]:
        """Item -> (file id, what is wrong): its file is bad, or its window runs past the file's end (worked out
        once: a built cache does not change)."""
        length = self.files.rows.reindex(self.file_ids).to_numpy()
        bad = np.isnan(length)
        length = np.nan_to_num(length).astype(np.int64)
        need = self.first + (EEG_WINDOW_ROWS if self.files.kind == "eeg" else 1)
        out = {}
        for i in np.flatnonzero(bad | (need > length)):
            file_id = int(self.file_ids[i])
            error = self.files.bad.get(file_id, "not in the cache") if bad[i] else \
                f"{length[i]} rows, but a labelled window needs {need[i]}"
            out[int(i)] = (file_id, error)
        return out

    def __getitem__(self, rows):
        scalar = np.ndim(rows) == 0
        rows = np.atleast_1d(np.arange(self.shape[0])[rows])
        out = np.empty((len(rows), *self.tile, 4), np.float32)
        for start in range(0, len(rows), 16):  # a few windows at a time: memory bounded per call
            part = rows[start:start + 16]
            if self.files.kind == "eeg":
                windows = np.zeros((len(part), EEG_WINDOW_ROWS, len(EEG_COLUMNS)), np.float32)
                for j, r in enumerate(part):
                    windows[j][:, CHAIN_INDEX] = self.files.read(int(self.file_ids[r]), int(self.first[r]), EEG_WINDOW_ROWS)
                out[start:start + len(part)] = _resize(eeg_spectrograms(windows), self.tile)
            else:
                tiles = []
                for r in part:
                    values = self.files.read(int(self.file_ids[r]), int(self.first[r]), SPEC_WINDOW_ROWS)
                    frame = np.zeros((len(values), len(SPEC_COLUMNS)), np.float32)
                    frame[:, 1:] = values
                    tiles.append(kaggle_tiles(frame, 0.0))  # past the file's end: NaN rows, as from the file itself
                out[start:start + len(part)] = _resize(np.stack(tiles), self.tile)
        out[...] = out.astype(np.float16)  # the tile cache's rounding: either cache gives a model the same numbers
        return out[0] if scalar else out


@dataclass
class WindowCache:
    """The per-file counterpart of `FeatureCache`: `features[i]` (made when read) belongs to `index.iloc[i]`."""

    path: Path
    index: pd.DataFrame
    features: WindowTiles

    def bad_items(self) -> np.ndarray:
        return np.array(sorted(self.features.problems), dtype=np.int64)


def build_window_caches(root, split: str, kinds, items: pd.DataFrame, options: FeatureOptions | None = None,
                        **settings) -> dict[str, WindowCache]:
    """Per-file caches for `items` (eeg_id, spectrogram_id, offsets), each read as the windows' arrays.

    `kinds`: tile kinds by name ("kaggle", "eeg": their tiles made when read, `WindowTiles`), or parts of a
    representation (`hms.representations.Part`: `name`, `stored` ("kaggle" or "eeg" files) and `make(files,
    file_ids, offsets)`, the array-like of its windows; `make` None: the stored kind's tiles).
    bad_files="fail" stops at the first bad file or window, naming it; "skip" leaves such items out (`bad_items`)."""
    options = checked(replace(options or FeatureOptions(), **settings))
    items = items[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]].reset_index(drop=True)
    out = {}
    for kind in kinds:
        name, stored, make = (kind, kind, None) if isinstance(kind, str) else (kind.name, kind.stored, kind.make)
        if stored not in SOURCES:
            raise ValueError(f"{name}: stored data files must be one of {tuple(SOURCES)}, got {stored!r}")
        file_ids = items[SOURCES[stored].column].to_numpy(np.int64)
        files = build_files(root, split, stored, file_ids, options)
        offsets = items[SOURCES[stored].offset].to_numpy(np.float64)
        arrays = WindowTiles(files, file_ids, offsets, options.tile) if make is None else make(files, file_ids, offsets)
        problems = arrays.problems
        if problems and options.bad_files == "fail":
            file_id, problem = next(iter(problems.values()))
            raise DataError(f"{SOURCES[stored].path(root, file_id, split)}: {problem}")
        out[name] = WindowCache(files.path, items, arrays)
    return out
