"""Kaggle scale: the per-file cache and every per-run step on a synthetic set of the competition's size.

    python benchmarks/scale.py [--root DIR] [--small 1500] [--workers 2] [--keep-cache]

The set (made once under --root, reused after): 17,089 eeg_ids, 1,950 patients, 11,138 spectrograms and
about 106,800 labelled windows, as Kaggle's training data (`python -m hms.synth DIR --eegs 17089 --patients
1950 --recordings 11138 --extra-seconds 42`, about 20 GB). In one run, each step in a fresh process (its wall
time and peak RSS):
- floor: one process reading every parquet file the cache reads, once;
- build: the per-file cache for every labelled window (data.sampling=random, data.cache=files), all cores;
  its bytes on disk;
- and, on the whole set and on a subset of its first --small eeg_ids (same files: a train.csv of its own),
  to show what grows with the dataset: reading train.csv, fold assignment, opening the built cache, and one
  epoch of random-window batches at full size (128x256 tiles, both kinds, batch 32) on --workers threads,
  as the trainer's PyDataset runs them.
Peak RSS counts mapped files too: the shared libraries (TensorFlow is imported by the batches) and the pages of
the memory-mapped cache the process has touched (page cache the kernel can drop at any time); "own memory" is
the peak anonymous RSS (/proc/self/status RssAnon), what the process itself holds.
Ratios are against the floor and the parquet bytes measured in the same run. `fit` throughput with tiles made
per batch against precomputed tiles is `benchmarks/fit_files.py --root DIR`.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from cache_files import build, parquet_floor  # noqa: E402

KAGGLE = dict(eegs=17_089, patients=1_950, recordings=11_138, extra_seconds=42)

STEP = """
import json, resource, sys, threading, time
root, store, step, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
peak_anon = [0]
def watch():  # the process's own (anonymous) memory, apart from the cache's mapped file pages that RSS also counts
    while True:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                peak_anon[0] = max(peak_anon[0], int(line.split()[1]))
        time.sleep(0.2)
threading.Thread(target=watch, daemon=True).start()
start = time.perf_counter()
from hms.dataset import assign_folds, load_train
from hms.inputs import train_items
imported = time.perf_counter()
result = {}
samples, windows = load_train(root)
t0 = time.perf_counter()
result["read"] = t0 - imported
if step != "read":
    folds = assign_folds(samples, 5, 42)
    t1 = time.perf_counter()
    result["folds"] = t1 - t0
if step in ("open", "epoch"):
    import numpy as np
    from hms.features.cache import FeatureOptions
    from hms.features.files import build_window_caches
    items = train_items(samples, windows, "random")
    t2 = time.perf_counter()
    caches = build_window_caches(root, "train", ("kaggle", "eeg"), items, FeatureOptions(tile=(128, 256), cache_dir=store, progress=False))
    t3 = time.perf_counter()
    result["items"] = t2 - t1
    result["open"] = t3 - t2
if step == "epoch":
    from concurrent.futures import ThreadPoolExecutor
    from hms.batches import TileBatches
    per_eeg = items.groupby("eeg_id").indices
    candidates = [per_eeg[e] for e in samples.eeg_id]
    y = np.full((len(samples), 6), 1 / 6, np.float32)
    batches = TileBatches([caches[k].features for k in ("kaggle", "eeg")], candidates, y, batch_size=32, shuffle=True, workers=workers)
    t4 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:  # the trainer's PyDataset: `workers` threads, batches in order
        seen = sum(len(x) for x, _ in pool.map(batches.__getitem__, range(len(batches))))
    result["epoch"] = time.perf_counter() - t4
    result["samples"] = seen
result["eeg_ids"] = int(samples.eeg_id.nunique())
result["rows"] = int(len(windows))
result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
time.sleep(0.3)
result["peak_anon_mb"] = peak_anon[0] / 1024
print(json.dumps(result))
"""


def step(root: Path, store: Path, name: str, workers: int) -> dict:
    done = subprocess.run([sys.executable, "-c", STEP, str(root), str(store), name, str(workers)], capture_output=True,
                          text=True, cwd=REPO)
    if done.returncode:
        raise RuntimeError(f"step {name} on {root} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def subset(root: Path, out: Path, eegs: int) -> Path:
    """A Kaggle-layout folder of `root`'s first `eegs` eeg_ids: its own train.csv, the same data files (links)."""
    import pandas as pd

    train = pd.read_csv(root / "train.csv")
    keep = train.eeg_id.drop_duplicates().iloc[:eegs]
    out.mkdir(parents=True, exist_ok=True)
    train[train.eeg_id.isin(keep)].to_csv(out / "train.csv", index=False)
    for folder in ("train_eegs", "train_spectrograms"):
        if not (out / folder).exists():
            (out / folder).symlink_to(root / folder)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--root", type=Path, default=Path(tempfile.gettempdir()) / "hms-kaggle-size",
                        help="the Kaggle-size synthetic set (made here if absent), or a real Kaggle download")
    parser.add_argument("--small", type=int, default=1500, help="eeg_ids of the subset the steps are compared with")
    parser.add_argument("--workers", type=int, default=2, help="threads assembling batches (the trainer's trainer.workers)")
    parser.add_argument("--cache", type=Path, default=None, help="cache folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    from hms.dataset import load_train
    from hms.synthetic import SynthSpec, ensure_dataset

    if not (args.root / "train.csv").is_file():
        ensure_dataset(args.root, SynthSpec(**KAGGLE, seed=17, test_eegs=8), progress=True)
    samples, windows = load_train(args.root)
    paths, parquet, floor = parquet_floor(args.root, samples)
    print(f"{samples.eeg_id.nunique()} eeg_ids, {samples.patient_id.nunique()} patients, {samples.spectrogram_id.nunique()} "
          f"spectrograms, {len(windows)} labelled windows; {len(paths)} parquet files ({parquet / 1e9:.2f} GB); "
          f"{os.cpu_count()} cores", flush=True)
    print(f"floor: one process reading every parquet file once: {floor:7.1f} s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.cache or Path(tmp) / "cache"
        built = build(args.root, store, "files")
        print(f"build (data.cache=files, every labelled window): {built['seconds']:7.1f} s ({built['seconds'] / floor:.2f}x the "
              f"floor), {built['bytes'] / 1e9:.2f} GB on disk ({built['bytes'] / parquet:.2f}x the parquet files), "
              f"peak RSS {built['peak_rss_mb']:.0f} MB", flush=True)
        small = subset(args.root, Path(tmp) / "small", args.small)
        build(small, store, "files")  # the subset's own cache folders (keyed by its files), not timed
        rows = {}
        for name, root in (("whole", args.root), ("subset", small)):
            read = step(root, store, "read", args.workers)
            opened = step(root, store, "open", args.workers)
            epoch = step(root, store, "epoch", args.workers)
            rows[name] = dict(read=read, opened=opened, epoch=epoch)
            print(f"{name:6s} {read['eeg_ids']:6d} eeg_ids {read['rows']:7d} rows: read train.csv {read['read']:6.2f} s "
                  f"(peak RSS {read['peak_rss_mb']:5.0f} MB); folds {opened['folds']:6.2f} s; open the cache {opened['open']:6.2f} s "
                  f"(peak RSS {opened['peak_rss_mb']:5.0f} MB); one epoch {epoch['samples']} samples in {epoch['epoch']:6.1f} s = "
                  f"{epoch['samples'] / epoch['epoch']:5.1f} samples/s (peak RSS {epoch['peak_rss_mb']:5.0f} MB, of it the process's own "
                  f"memory {epoch['peak_anon_mb']:5.0f} MB; the rest is mapped files: the cache's pages and shared libraries)", flush=True)
        w, s = rows["whole"], rows["subset"]
        scale = w["read"]["rows"] / s["read"]["rows"]
        print(f"whole / subset, with {scale:.1f}x the rows: read {w['read']['read'] / s['read']['read']:.1f}x, "
              f"folds {w['opened']['folds'] / s['opened']['folds']:.1f}x, open {w['opened']['open'] / s['opened']['open']:.1f}x, "
              f"epoch samples/s {(w['epoch']['samples'] / w['epoch']['epoch']) / (s['epoch']['samples'] / s['epoch']['epoch']):.2f}x; "
              f"peak own memory of an epoch {w['epoch']['peak_anon_mb'] / s['epoch']['peak_anon_mb']:.2f}x "
              f"(peak RSS, mapped files included, {w['epoch']['peak_rss_mb'] / s['epoch']['peak_rss_mb']:.2f}x)")


if __name__ == "__main__":
    main()
