"""Random windows at full tile size: the per-file cache against finished tiles and against reading the parquet files.

    python benchmarks/cache_files.py [--eegs 1500] [--patients N] [--root DIR] [--skip-tiles]
    python benchmarks/cache_files.py --eegs 17089 --patients 1950 --skip-tiles   # Kaggle's size

On one Kaggle-layout dataset (a synthetic one of --eegs eeg_ids, generated once under --root, or yours), with
every labelled window as an item (data.sampling=random) and 128x256 tiles, in one run:
- floor: one process reading every parquet file the caches read, once (the 16 chain electrodes of each EEG,
  each spectrogram whole), as the build does;
- the per-file cache (data.cache=files) and the finished-tile cache (data.cache=tiles), each built in a fresh
  process with all cores: wall time, bytes on disk, peak RSS of the largest process (builder or worker);
- how fast each gives a window's tiles (one thread): the per-file cache makes them (decompress, EEG
  spectrogram, Kaggle tiles), the tile cache reads them.
Ratios are against the floor and the parquet bytes measured in the same run.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BUILD = """
import json, sys, time
from hms.dataset import load_train
from hms.inputs import train_items
from hms.features.cache import FeatureOptions, build_caches
from hms.features.files import build_window_caches
root, store, mode = sys.argv[1:4]
samples, windows = load_train(root)
items = train_items(samples, windows, "random")
options = FeatureOptions(tile=(128, 256), cache_dir=store, progress=False)
start = time.perf_counter()
(build_window_caches if mode == "files" else build_caches)(root, "train", ("kaggle", "eeg"), items, options)
seconds = time.perf_counter() - start
import resource
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": seconds, "items": len(items), "peak_rss_mb": peak / 1024}))  # the largest process: builder or worker
"""


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(root: Path, store: Path, mode: str) -> dict:
    """One cache build in a fresh process (its peak RSS: the largest of it and its worker processes)."""
    done = subprocess.run([sys.executable, "-c", BUILD, str(root), str(store), mode], capture_output=True, text=True,
                          cwd=REPO, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["bytes"] = folder_bytes(store)
    return result


def read_speed(root: Path, store: Path, mode: str, n: int = 64) -> float:
    """Windows' tiles per second, one thread, at random rows (both kinds)."""
    import numpy as np

    from hms.dataset import load_train
    from hms.features.cache import FeatureOptions, build_caches
    from hms.features.files import build_window_caches
    from hms.inputs import train_items

    samples, windows = load_train(root)
    items = train_items(samples, windows, "random")
    options = FeatureOptions(tile=(128, 256), cache_dir=str(store), progress=False)
    caches = (build_window_caches if mode == "files" else build_caches)(root, "train", ("kaggle", "eeg"), items, options)
    rows = np.sort(np.random.default_rng(0).choice(len(items), n, replace=False))
    start = time.perf_counter()
    for cache in caches.values():
        np.asarray(cache.features[rows], np.float32)
    return n / (time.perf_counter() - start)


def parquet_floor(root: Path, samples) -> tuple[list, int, float]:
    """The floor every cache build is measured against: one process (one thread) reading every parquet file the
    caches read once (the 16 chain electrodes of each EEG, each spectrogram whole). Returns the paths, their
    bytes and the seconds."""
    from threadpoolctl import threadpool_limits

    from hms.dataset import read_eeg, read_spectrogram
    from hms.features.eeg import CHAIN_CHANNELS

    paths = [root / "train_eegs" / f"{int(i)}.parquet" for i in samples.eeg_id.unique()]
    paths += [root / "train_spectrograms" / f"{int(i)}.parquet" for i in samples.spectrogram_id.unique()]
    parquet = sum(p.stat().st_size for p in paths)
    start = time.perf_counter()
    with threadpool_limits(1):
        for p in paths:
            (read_spectrogram(p) if "spectrograms" in str(p) else read_eeg(p, only=CHAIN_CHANNELS))
    return paths, parquet, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=1500)
    parser.add_argument("--patients", type=int, default=None, help="default: eegs / 8")
    parser.add_argument("--root", type=Path, default=None, help="a Kaggle-layout folder (default: a synthetic one, made once)")
    parser.add_argument("--skip-tiles", action="store_true", help="leave out the finished-tile cache (its disk use is large)")
    args = parser.parse_args()
    from hms.dataset import load_train
    from hms.synthetic import SynthSpec, ensure_dataset

    patients = args.patients or max(1, args.eegs // 8)
    root = args.root or Path(tempfile.gettempdir()) / f"hms-bench-n{args.eegs}-p{patients}"
    if args.root is None:
        ensure_dataset(root, SynthSpec(eegs=args.eegs, patients=patients, seed=11, test_eegs=8), progress=True)
    samples, windows = load_train(root)
    paths, parquet, floor = parquet_floor(root, samples)
    print(f"{samples.eeg_id.nunique()} eeg_ids, {len(windows)} labelled windows, {len(paths)} parquet files "
          f"({parquet / 1e9:.2f} GB), {os.cpu_count()} cores")
    print(f"floor: one process reading every parquet file once: {floor:6.1f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for mode in (("files",) if args.skip_tiles else ("files", "tiles")):
            store = Path(tmp) / mode
            result = build(root, store, mode)
            speed = read_speed(root, store, mode)
            print(f"data.cache={mode:5s}: build {result['seconds']:6.1f} s ({result['seconds'] / floor:4.2f}x the floor), "
                  f"{result['bytes'] / 1e9:5.2f} GB on disk ({result['bytes'] / parquet:4.2f}x the parquet files), "
                  f"peak RSS {result['peak_rss_mb']:5.0f} MB; {speed:5.0f} windows/s from it (both kinds, one thread)")


if __name__ == "__main__":
    main()
