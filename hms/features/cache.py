"""The feature cache: every item's tiles computed once into memory-mapped arrays.

One cache folder per (data, split, feature kind, tile size, windows): `features.npy` (float16,
items x H x W x 4), `status.npy` (0 to do, 1 done, 2 bad file) and `index.parquet`. Workers write
straight into the memory maps, file by file, so memory does not grow with the dataset and an
interrupted build continues where it stopped. Opening a built cache maps it: no data is read.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..constants import EEG_RATE, EEG_WINDOW_ROWS
from .. import disk, logs
from ..dataset.layout import DataError, eeg_path, read_eeg, read_spectrogram, spectrogram_path
from .eeg import CHAIN_CHANNELS, eeg_spectrograms
from .kaggle import kaggle_tiles

log = logs.get(__name__)

CACHE_VERSION = 2  # 2: keyed by every data file's stamp
KINDS = ("kaggle", "eeg")


class Source(NamedTuple):
    """Where a tile kind comes from: the items' file-id and offset columns, and the data file's path."""

    column: str
    offset: str
    path: Callable


SOURCES = {"kaggle": Source("spectrogram_id", "spec_offset", spectrogram_path), "eeg": Source("eeg_id", "eeg_offset", eeg_path)}
# The public precomputed EEG spectrograms (the public notebook's eeg_specs.npy) hold the chains in the
# notebook's order: LL, LP, then the right lateral ("RP") and right parasagittal ("RR") chains. hms
# orders them as Kaggle's spectrogram regions (LL, RL, LP, RP): these are the file's channels in that order.
PUBLIC_NPY_CHANNELS = (0, 2, 1, 3)
TODO, DONE, BAD = 0, 1, 2


@dataclass(frozen=True)
class FeatureOptions:
    """How caches are built: tile size, where they live, how many processes, what a bad file does,
    and an optional public precomputed EEG-spectrogram file. One object instead of loose flags."""

    tile: tuple = (128, 256)
    cache_dir: str | None = None  # required: the config's `paths.cache`
    workers: int | None = None
    bad_files: str = "fail"  # fail: stop naming the file; skip: mark its items bad, list every such file
    precomputed: str | None = None
    progress: bool = True


def checked(options: FeatureOptions) -> FeatureOptions:
    """`options`, or ValueError when it names no cache folder (the library has no working-directory default)."""
    if not options.cache_dir:
        raise ValueError("FeatureOptions.cache_dir is required: the folder the caches live in (a config's paths.cache)")
    return options


class FileGroup(NamedTuple):
    """One data file's items in a cache: the file's id, the cache rows, and each row's offset (s)."""

    file_id: int
    rows: np.ndarray
    offsets: np.ndarray


class Job(NamedTuple):
    """A worker's chunk: files of one kind to compute into one cache folder."""

    folder: str
    kind: str
    root: str
    split: str
    tile: tuple
    groups: list


@dataclass
class FeatureCache:
    """A built (or partly built) cache of one feature kind: `features[i]` belongs to `index.iloc[i]`."""

    path: Path
    index: pd.DataFrame
    features: np.ndarray
    status: np.ndarray

    @property
    def complete(self) -> bool:
        return bool((self.status != TODO).all())

    def bad_items(self) -> np.ndarray:
        return np.flatnonzero(self.status == BAD)


def _stamp(path: Path):
    """(size, modification time in ns) of a file, or None where it is missing (the build then names it)."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_size, stat.st_mtime_ns


def cache_key(root, split: str, kind: str, tile, items: pd.DataFrame, source: str | None = None) -> str:
    """A digest of everything the features depend on: the table and every data file the items read (size and
    modification time in ns: one stat per file, no reading), the windows, the tile size and the version.

    Replace or edit one EEG or spectrogram parquet and the key changes, so the next run rebuilds."""
    root = Path(root).resolve()
    stamps = [(p.name, _stamp(p)) for p in (root / f"{split}.csv",)]
    source_of = SOURCES[kind]
    files = np.unique(items[source_of.column].to_numpy(np.int64))
    stamps.append([_stamp(source_of.path(root, file_id, split)) for file_id in files])
    if source:
        stamps.append((str(Path(source).resolve()), _stamp(Path(source))))
    digest = hashlib.sha256(json.dumps([CACHE_VERSION, str(root), split, kind, list(tile), files.tolist(), stamps]).encode())
    digest.update(np.ascontiguousarray(items[["eeg_id", "spectrogram_id"]].to_numpy(np.int64)).tobytes())
    digest.update(np.ascontiguousarray(items[["eeg_offset", "spec_offset"]].to_numpy(np.float64)).tobytes())
    return digest.hexdigest()[:16]


def _resize(tiles: np.ndarray, tile) -> np.ndarray:
    """(k, 128, 256, 4) to (k, H, W, 4) by area averaging, when a smaller tile is configured."""
    height, width = tile
    if tiles.shape[1:3] == (height, width):
        return tiles
    import cv2

    return np.stack([cv2.resize(t, (width, height), interpolation=cv2.INTER_AREA) for t in tiles])


def _compute(kind: str, root: str, split: str, file_id: int, offsets: np.ndarray, tile) -> np.ndarray:
    """Tiles of one file's items: raises DataError naming the file if it is bad."""
    if kind == "kaggle":
        path = spectrogram_path(root, file_id, split)
        frame = read_spectrogram(path)
        if offsets.max() // 2 >= len(frame):
            raise DataError(f"{path}: {len(frame)} rows, but a labelled window starts at row {int(offsets.max() // 2)}")
        return _resize(np.stack([kaggle_tiles(frame, o) for o in offsets]), tile)
    path = eeg_path(root, file_id, split)
    frame = read_eeg(path, only=CHAIN_CHANNELS)  # Fz, Cz, Pz and EKG are in no chain
    starts = np.round(offsets * EEG_RATE).astype(int)
    if starts.max() + EEG_WINDOW_ROWS > len(frame):
        raise DataError(f"{path}: {len(frame)} rows, but a labelled window needs {starts.max() + EEG_WINDOW_ROWS}")
    return _resize(eeg_spectrograms(np.stack([frame[s:s + EEG_WINDOW_ROWS] for s in starts])), tile)


def _work(job) -> list[tuple[str, str | None]]:
    """A worker's chunk of files: compute, write into the maps, mark done (or bad). Returns (file, error)."""
    from threadpoolctl import threadpool_limits

    features = np.load(Path(job.folder) / "features.npy", mmap_mode="r+")
    status = np.load(Path(job.folder) / "status.npy", mmap_mode="r+")
    report = []
    with threadpool_limits(1):
        for file_id, rows, offsets in job.groups:
            try:
                features[rows] = _compute(job.kind, job.root, job.split, file_id, offsets, job.tile)
            except DataError as error:
                status[rows] = BAD
                report.append((str(file_id), str(error)))
                continue
            status[rows] = DONE  # after the data: a killed process's writes stay in the page cache, so a resumed build trusts it
            report.append((str(file_id), None))
    features.flush()
    status.flush()
    return report


class DiskFull(DataError, disk.DiskFull):
    """No room for a cache on its filesystem (full, over quota, or over the process's file-size limit)."""


def _reserve(path: Path, size: int) -> None:
    """Allocate a (sparse) file's blocks now: a full disk is then an error here, naming the file, instead of a
    SIGBUS later when a worker writes into its memory map."""
    try:
        with open(path, "r+b") as handle:
            os.posix_fallocate(handle.fileno(), 0, size)
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EINVAL):  # a filesystem without fallocate: written as it goes
            return
        raise


def _create(folder: Path, items: pd.DataFrame, tile, meta: dict) -> None:
    """Lay out an empty tile cache (see `_create_folder`), its blocks allocated."""
    def lay_out(partial: Path) -> None:
        features = np.lib.format.open_memmap(partial / "features.npy", mode="w+", dtype=np.float16, shape=(len(items), *tile, 4))
        del features
        _reserve(partial / "features.npy", (partial / "features.npy").stat().st_size)
        np.save(partial / "status.npy", np.zeros(len(items), np.uint8))
        items.reset_index(drop=True).to_parquet(partial / "index.parquet")

    _create_folder(folder, lay_out, meta, needed=len(items) * int(np.prod(tile)) * 4 * np.dtype(np.float16).itemsize)


def _create_folder(folder: Path, lay_out, meta: dict, needed: int | None = None) -> None:
    """Lay out an empty cache (`lay_out(staging folder)`, then `meta.json`) in a staging folder of this process's
    own, then rename it into place: two runs creating the same cache at once each stage their own, and the
    second rename finds it done."""
    import uuid

    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = folder.with_name(f"{folder.name}.creating-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    partial.mkdir()
    try:
        try:
            lay_out(partial)
            (partial / "meta.json").write_text(json.dumps(meta, indent=2))
        except OSError as error:
            if not disk.is_full(error):
                raise
            needed = needed or sum(p.stat().st_size for p in partial.iterdir() if p.is_file())
            raise disk.error(folder, needed, error, "this cache on its filesystem", "Free some space or point "
                             "data.cache_dir elsewhere (nothing partial is kept)", kind=DiskFull) from None
        try:
            partial.rename(folder)
        except OSError:  # another process put the same cache in place first: use theirs
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def open_cache(folder) -> FeatureCache:
    """Map a cache folder (no data is read)."""
    folder = Path(folder)
    return FeatureCache(folder, pd.read_parquet(folder / "index.parquet"), np.load(folder / "features.npy", mmap_mode="r"),
                        np.load(folder / "status.npy", mmap_mode="r"))


def build_cache(root, split: str, kind: str, items: pd.DataFrame, **options) -> FeatureCache:
    """Build (or finish, or just open) the cache of one tile kind; options as `build_caches`."""
    return build_caches(root, split, (kind,), items, **options)[kind]


def build_caches(root, split: str, kinds, items: pd.DataFrame, options: FeatureOptions | None = None,
                 **settings) -> dict[str, FeatureCache]:
    """Build (or finish, or just open) the caches of `kinds` for `items` (eeg_id, spectrogram_id, offsets).

    `options` (or its fields as keywords: tile, cache_dir, workers, bad_files, precomputed, progress).
    All kinds' files go through one pool of worker processes. bad_files="fail" stops at the first
    bad file with an error naming it (what was computed is kept); "skip" marks its items bad,
    names every such file, and goes on.
    """
    options = checked(replace(options or FeatureOptions(), **settings))
    tile, cache_dir, workers = tuple(options.tile), options.cache_dir, options.workers
    precomputed = options.precomputed
    items = items[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]].reset_index(drop=True)
    folders, jobs, total = {}, [], 0
    for kind in kinds:
        if kind not in KINDS:
            raise ValueError(f"feature kind must be one of {KINDS}, got {kind!r}")
        source = precomputed if kind == "eeg" else None
        folder = Path(cache_dir) / f"{split}-{kind}-{tile[0]}x{tile[1]}-{cache_key(root, split, kind, tile, items, source)}"
        folders[kind] = folder
        if not folder.exists():
            _create(folder, items, tile, {"root": str(Path(root).resolve()), "split": split, "kind": kind, "tile": list(tile),
                                          "items": len(items), "version": CACHE_VERSION, "precomputed": source})
        if source and not open_cache(folder).complete:
            _fill_precomputed(folder, items, source, tile)
        _recheck_bad(folder)
        todo = np.flatnonzero(open_cache(folder).status == TODO)
        groups = [FileGroup(int(fid), rows.to_numpy(), items.loc[rows, SOURCES[kind].offset].to_numpy(np.float64))
                  for fid, rows in items.loc[todo].groupby(SOURCES[kind].column).groups.items()]
        jobs += _jobs(folder, kind, str(root), split, tuple(tile), groups, workers)
        total += len(todo)
    if jobs:
        _run(jobs, options, total, f"{split} features ({', '.join(kinds)})")
    return {kind: open_cache(folder) for kind, folder in folders.items()}


def _jobs(folder, kind, root, split, tile, groups, workers):
    """Chunks of files, small enough to spread over the workers and show progress."""
    chunk = max(1, min(64, len(groups) // ((workers or os.cpu_count() or 1) * 4)))
    return [Job(str(folder), kind, root, split, tile, groups[i:i + chunk]) for i in range(0, len(groups), chunk)]


def _run(jobs, options: FeatureOptions, total, description, work=None) -> None:
    """Run `jobs` (each a folder, kind and file groups) through `work` (default: the tile cache's) in a pool of
    processes, with progress over `total` items; bad files stop the build or are listed (options.bad_files)."""
    work = work or _work
    workers = max(1, min(options.workers or os.cpu_count() or 1, len(jobs)))
    sizes = {(job.kind, group.file_id): len(group.rows) for job in jobs for group in job.groups}
    bad = []
    bar = tqdm(total=total, desc=description, unit="item", disable=not options.progress, mininterval=0.5)
    try:
        if workers == 1:
            for job in jobs:
                bad += _account(job.kind, work(job), sizes, bar, options.bad_files)
            return
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            pending = {pool.submit(work, job): job.kind for job in jobs}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        bad += _account(pending.pop(future), future.result(), sizes, bar, options.bad_files)
            except BaseException:
                for future in pending:
                    future.cancel()
                raise
    finally:
        bar.close()
        if bad:
            log.warning(f"{len(bad)} bad file(s) skipped:")
            for error in bad:
                log.warning(f"  {error}")


def _recheck_bad(folder: Path) -> None:
    """Items an earlier build marked bad are computed again, not trusted: a bad file is re-read on every
    run, so a run with bad_files=fail fails again naming it, and a repaired file is used (its new stamp
    also gives a new cache key, but a file can be repaired back to the same size and time)."""
    status = np.load(folder / "status.npy", mmap_mode="r+")
    if (status == BAD).any():
        status[status == BAD] = TODO
        status.flush()


def _account(kind, report, sizes, bar, bad_files):
    bad = []
    for file_id, error in report:
        bar.update(sizes[(kind, int(file_id))])
        if error is not None:
            if bad_files == "fail":
                raise DataError(error)
            bad.append(error)
    return bad


class _ArraysOnly:
    """An unpickler that rebuilds dicts of NumPy arrays and nothing else: a pickle naming any other
    callable (os.system, eval ...) is refused before it runs."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "int"), ("builtins", "dict")}

    @classmethod
    def load(cls, handle):
        import pickle

        class Unpickler(pickle.Unpickler):
            def find_class(self, module, name):
                if (module, name) not in cls.ALLOWED:
                    raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays are allowed")
                return super().find_class(module, name)

        return Unpickler(handle).load()


def load_array_dict(path) -> dict:
    """A `.npy` holding a pickled dict of arrays (the public eeg_specs.npy), read without running code from it."""
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            _, _, dtype = read_header(handle)
            if dtype.hasobject:
                table = _ArraysOnly.load(handle)
            else:
                raise ValueError("it holds a plain array, not a pickled dict")
    except Exception as error:  # noqa: BLE001 - any failure is the file's, named
        raise DataError(f"{path}: not a NumPy file holding a dict eeg_id -> 128x256x4 array ({error})") from error
    if isinstance(table, np.ndarray) and table.dtype == object and table.shape == ():
        table = table.item()
    if not isinstance(table, dict):
        raise DataError(f"{path}: not a NumPy file holding a dict eeg_id -> 128x256x4 array (it holds {type(table).__name__})")
    return table


def _fill_precomputed(folder: Path, items: pd.DataFrame, path: str, tile) -> None:
    """Copy the public precomputed EEG spectrograms (dict eeg_id -> 128x256x4) into the cache."""
    table = load_array_dict(path)
    features = np.load(folder / "features.npy", mmap_mode="r+")
    status = np.load(folder / "status.npy", mmap_mode="r+")
    lacking = []
    for eeg_id, rows in items.groupby("eeg_id").groups.items():
        spectrogram = table.get(int(eeg_id))
        if spectrogram is None:
            lacking.append(int(eeg_id))
            continue
        if np.shape(spectrogram) != (128, 256, 4):
            raise DataError(f"{path}: eeg_id {eeg_id} has shape {np.shape(spectrogram)}, expected (128, 256, 4)")
        spectrogram = np.asarray(spectrogram, np.float32)[..., list(PUBLIC_NPY_CHANNELS)]
        features[rows.to_numpy()] = _resize(spectrogram[None], tile)[0]
        status[rows.to_numpy()] = DONE
    features.flush()
    status.flush()
    if lacking:
        log.info(f"{path} lacks {len(lacking)} of {items.eeg_id.nunique()} eeg_ids (e.g. {lacking[:5]}): computing them from the EEG files")
