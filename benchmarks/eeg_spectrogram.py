"""EEG spectrograms per second on one core: hms's batched formula vs the notebook's librosa call per pair.

    python benchmarks/eeg_spectrogram.py [--eegs 40]

Same EEG windows, same process, one BLAS thread. Each side does one discarded pass over all windows
(librosa's JIT, caches), then the same 3 timed passes. The notebook's side reads the windows as it does, as
pandas frames by column name; ours as the cache reads them. Prints the speed-up.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.dataset import read_eeg  # noqa: E402
from hms.features import eeg_spectrogram, eeg_spectrograms  # noqa: E402
from hms.synthetic import SynthSpec, generate  # noqa: E402
from hms.features.notebook import librosa_eeg_spectrogram  # noqa: E402


REPEAT = 3


def rate(fn, windows):
    """Windows/s over REPEAT timed passes, after one discarded pass."""
    fn(windows)
    start = time.perf_counter()
    for _ in range(REPEAT):
        fn(windows)
    return REPEAT * len(windows) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=40)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(tmp, SynthSpec(eegs=8, patients=2, seed=0, test_eegs=args.eegs))
        paths = sorted(Path(tmp, "test_eegs").glob("*.parquet"))
        windows = np.stack([read_eeg(p) for p in paths])
        frames = [pd.read_parquet(p) for p in paths]
    with threadpool_limits(1):
        reference = rate(lambda w: [librosa_eeg_spectrogram(x) for x in w], frames)
        one_by_one = rate(lambda w: [eeg_spectrogram(x) for x in w], windows)
        batched = rate(lambda w: [eeg_spectrograms(w[i:i + 8]) for i in range(0, len(w), 8)], windows)
    print(f"EEG windows: {len(windows)} x 50 s, one core, {REPEAT} timed passes each")
    print(f"librosa per pair (seed):   {reference:8.1f} EEGs/s")
    print(f"hms, one EEG at a time:    {one_by_one:8.1f} EEGs/s   ratio {one_by_one / reference:6.1f}x")
    print(f"hms, batches of 8:         {batched:8.1f} EEGs/s   ratio {batched / reference:6.1f}x")


if __name__ == "__main__":
    main()
