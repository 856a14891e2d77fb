"""EEG spectrograms per second on one core: hms's batched formula vs the seed's librosa call per pair.

    python benchmarks/eeg_spectrogram.py [--eegs 40]

Same EEG windows, same process, one BLAS thread; both warmed up first. Prints the speed-up.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.data import read_eeg  # noqa: E402
from hms.features import eeg_spectrogram, eeg_spectrograms  # noqa: E402
from hms.synth import SynthSpec, generate  # noqa: E402
from tests.features.reference import librosa_eeg_spectrogram  # noqa: E402


def rate(fn, windows, repeat=1):
    start = time.perf_counter()
    for _ in range(repeat):
        fn(windows)
    return repeat * len(windows) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, SynthSpec(eegs=8, patients=2, seed=0, test_eegs=args.eegs))
        windows = np.stack([read_eeg(p) for p in sorted(Path(tmp, "test_eegs").glob("*.parquet"))])
    with threadpool_limits(1):
        librosa_eeg_spectrogram(windows[0]), eeg_spectrogram(windows[0])  # warm-up (librosa's JIT, caches)
        reference = rate(lambda w: [librosa_eeg_spectrogram(x) for x in w], windows)
        one_by_one = rate(lambda w: [eeg_spectrogram(x) for x in w], windows, repeat=3)
        batched = rate(lambda w: [eeg_spectrograms(w[i:i + 8]) for i in range(0, len(w), 8)], windows, repeat=3)
    print(f"EEG windows: {len(windows)} x 50 s, one core")
    print(f"librosa per pair (seed):   {reference:8.1f} EEGs/s")
    print(f"hms, one EEG at a time:    {one_by_one:8.1f} EEGs/s   ratio {one_by_one / reference:6.1f}x")
    print(f"hms, batches of 8:         {batched:8.1f} EEGs/s   ratio {batched / reference:6.1f}x")


if __name__ == "__main__":
    main()
