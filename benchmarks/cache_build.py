"""A whole feature-cache build (both tile kinds, all cores) vs the floor: just reading the same parquet files.

    python benchmarks/cache_build.py [--eegs 300]

Both on the same fresh synthetic dataset in one run, each with a pool of spawned worker processes (one per
core). The floor reads every file once exactly as the build does: the 16 chain electrodes of each EEG (the
build never reads Fz, Cz, Pz or EKG) and all 401 columns of each spectrogram. So the floor is a true lower
bound: the build does that reading and then computes and writes the tiles.
"""

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.dataset import load_train, read_eeg, read_spectrogram  # noqa: E402
from hms.features.cache import build_caches  # noqa: E402
from hms.features.eeg import CHAIN_CHANNELS  # noqa: E402
from hms.synthetic import SynthSpec, generate  # noqa: E402


def read_all(paths):
    for p in paths:
        if "spectrograms" in str(p):
            read_spectrogram(p)
        else:
            read_eeg(p, only=CHAIN_CHANNELS)  # what the build reads
    return len(paths)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=300)
    args = parser.parse_args()
    workers = os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        generate(root, SynthSpec(eegs=args.eegs, patients=max(1, args.eegs // 5), seed=0, test_eegs=1))
        samples, _ = load_train(root)
        items = samples[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]]
        paths = sorted((root / "train_eegs").glob("*.parquet")) + sorted((root / "train_spectrograms").glob("*.parquet"))
        start = time.perf_counter()
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
            sum(pool.map(read_all, [paths[i::workers * 4] for i in range(workers * 4)]))
        floor = time.perf_counter() - start
        start = time.perf_counter()
        build_caches(root, "train", ("kaggle", "eeg"), items, cache_dir=Path(tmp) / "cache", workers=workers, progress=False)
        build = time.perf_counter() - start
    print(f"{len(items)} eeg_ids, {len(paths)} parquet files, {workers} workers")
    print(f"read every parquet file (floor): {floor:6.2f} s")
    print(f"build the whole cache:           {build:6.2f} s   ratio {build / floor:5.2f}x the floor")


if __name__ == "__main__":
    main()
