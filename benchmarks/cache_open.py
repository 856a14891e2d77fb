"""Cache open time and peak memory at two dataset sizes: the cost must not grow with the size.

    python benchmarks/cache_open.py [--small 500] [--large 8000]

Each size is a full-size (128x256x4, float16) cache folder whose tiles are really written here (random
values, block by block: no sparse file, every page on disk); each open runs in a fresh process, 3 times,
the fastest kept. Both sizes are measured the same way, right after being written (so both may be in the
page cache). The first batch is 32 rows drawn at random, as a shuffled epoch reads them.
"""

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.features.cache import _create  # noqa: E402

PROBE = """
import json, resource, sys, time
start = time.perf_counter()
from hms.features.cache import open_cache
import_s = time.perf_counter() - start
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
cache = open_cache(sys.argv[1])
import numpy as np
rows = np.sort(np.random.default_rng(0).choice(len(cache.index), 32, replace=False))
batch = cache.features[rows].astype('float32')  # a shuffled epoch's first batch
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"open_s": seconds, "extra_peak_mb": (peak - before) / 1024, "items": len(cache.index)}))
"""


def make(folder: Path, n: int) -> None:
    items = pd.DataFrame({"eeg_id": np.arange(n), "spectrogram_id": np.arange(n), "eeg_offset": 0.0, "spec_offset": 0.0})
    _create(folder, items, (128, 256), {"items": n})
    features = np.load(folder / "features.npy", mmap_mode="r+")
    rng = np.random.default_rng(0)
    block = rng.normal(size=(256, 128, 256, 4)).astype(np.float16)
    for start in range(0, n, len(block)):
        features[start:start + len(block)] = block[:n - start]
    features.flush()
    del features


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=500)
    parser.add_argument("--large", type=int, default=8000)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.small, args.large):
            make(Path(tmp) / str(n), n)
            runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, str(Path(tmp) / str(n))], capture_output=True,
                                              text=True, check=True).stdout) for _ in range(3)]
            results[n] = min(runs, key=lambda r: r["open_s"])
            size_gb = n * 128 * 256 * 4 * 2 / 1e9
            print(f"{n:6d} items ({size_gb:5.1f} GB on disk): open {results[n]['open_s'] * 1000:6.1f} ms, "
                  f"extra peak memory {results[n]['extra_peak_mb']:6.1f} MB")
    small, large = results[args.small], results[args.large]
    print(f"size ratio {args.large / args.small:.0f}x -> open time ratio {large['open_s'] / small['open_s']:.2f}x, "
          f"peak memory ratio {max(large['extra_peak_mb'], 1) / max(small['extra_peak_mb'], 1):.2f}x")


if __name__ == "__main__":
    main()
