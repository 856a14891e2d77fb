"""Cache open time and peak memory at two dataset sizes: the cost must not grow with the size.

    python benchmarks/cache_open.py [--small 1000] [--large 30000]

Each size is a full-size (128x256x4, float16) cache folder written here; each open runs in a fresh process.
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
batch = cache.features[:32].astype('float32')  # first batch, as training does
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"open_s": seconds, "extra_peak_mb": (peak - before) / 1024, "items": len(cache.index)}))
"""


def make(folder: Path, n: int) -> None:
    items = pd.DataFrame({"eeg_id": np.arange(n), "spectrogram_id": np.arange(n), "eeg_offset": 0.0, "spec_offset": 0.0})
    _create(folder, items, (128, 256), {"items": n})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=1000)
    parser.add_argument("--large", type=int, default=30000)
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
