"""Input pipeline throughput at full size (128x256x8) vs the notebook's per-sample batch assembly.

    python benchmarks/input_pipeline.py [--samples 2048] [--batch 32]

Baseline (the notebook's DataGenerator): for each sample, slice its Kaggle spectrogram from an in-memory
dict, clip/log/standardise each region and pad it, copy its EEG spectrogram; no augmentation.
Ours: TileBatches reading the float16 memory-mapped cache, without augmentation (the same work as the
notebook), and with the time flip or the notebook's flip + coarse dropout (more work than the notebook).

Both sides are timed the same ways: called directly in one thread, and as Keras's fit consumes a
PyDataset with 2 worker threads. Each timing is one full pass over the batches, clock started before
the pass (thread start-up and prefetching included), after one discarded warm-up pass.
Prints samples/s and ratios to the notebook at the same thread count.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.augment import build_augmentation  # noqa: E402
from hms.batches import TileBatches  # noqa: E402
from hms.features.cache import _create, open_cache  # noqa: E402


def notebook_generator(spectrograms, eeg_specs, rows, batch):
    """The notebook's __data_generation, one batch (Chris Deotte's EfficientNet starter)."""
    x = np.zeros((len(batch), 128, 256, 8), dtype="float32")
    for j, i in enumerate(batch):
        spec_id, offset, eeg_id = rows[i]
        r = int(offset // 2)
        for k in range(4):
            img = spectrograms[spec_id][r:r + 300, k * 100:(k + 1) * 100].T
            img = np.clip(img, np.exp(-4), np.exp(8))
            img = np.log(img)
            ep = 1e-6
            m = np.nanmean(img.flatten())
            s = np.nanstd(img.flatten())
            img = (img - m) / (s + ep)
            img = np.nan_to_num(img, nan=0.0)
            x[j, 14:-14, :, k] = img[:, 22:-22] / 2.0
        x[j, :, :, 4:] = eeg_specs[eeg_id]
    return x


class NotebookBatches:
    """The notebook's generator as a Keras PyDataset, so that it can be fed with the same worker threads as ours."""

    def __new__(cls, spectrograms, eeg_specs, rows, batch, workers=1):
        import keras

        class _Seed(keras.utils.PyDataset):
            def __init__(self):
                super().__init__(workers=workers, use_multiprocessing=False)

            def __len__(self):
                return len(rows) // batch

            def __getitem__(self, b):
                return notebook_generator(spectrograms, eeg_specs, rows, range(b * batch, (b + 1) * batch)), None

        return _Seed()


def one_thread(dataset) -> float:
    """Samples/s of one full pass calling the dataset directly, after a discarded warm-up pass."""
    for timed in (False, True):
        start, count = time.perf_counter(), 0
        for b in range(len(dataset)):
            count += len(dataset[b][0])
        elapsed = time.perf_counter() - start
    return count / elapsed


def as_keras_feeds(dataset) -> float:
    """Samples/s of one full pass as Keras's fit consumes a PyDataset (its worker threads prefetching), clock
    started before the pass, after a discarded warm-up pass."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(dataset, shuffle=False)
    for timed in (False, True):
        start, count = time.perf_counter(), 0
        for x, *_ in adapter.get_numpy_iterator():
            count += len(x)
        elapsed = time.perf_counter() - start
        adapter.on_epoch_end()
    return count / elapsed


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n, batch = args.samples, args.batch
    spectrograms = {i: rng.lognormal(0, 1.5, (600, 400)).astype(np.float32) for i in range(64)}
    eeg_specs = {i: rng.normal(size=(128, 256, 4)).astype(np.float32) for i in range(n)}
    rows = [(i % 64, float(2 * rng.integers(0, 150)), i) for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        items = pd.DataFrame({"eeg_id": np.arange(n), "spectrogram_id": np.arange(n), "eeg_offset": 0.0, "spec_offset": 0.0})
        sources = []
        for kind in ("kaggle", "eeg"):
            _create(Path(tmp) / kind, items, (128, 256), {})
            features = np.load(Path(tmp) / kind / "features.npy", mmap_mode="r+")
            for start in range(0, n, 256):
                features[start:start + 256] = rng.normal(size=(min(256, n - start), 128, 256, 4)).astype(np.float16)
            features.flush()
            sources.append(open_cache(Path(tmp) / kind).features)
        y = np.full((n, 6), 1 / 6, np.float32)
        candidates = rng.permutation(n)
        notebook = {threads: NotebookBatches(spectrograms, eeg_specs, rows, batch, workers=threads) for threads in (1, 2)}
        notebook_rates = (one_thread(notebook[1]), as_keras_feeds(notebook[2]))
        print(f"notebook per-sample assembly, no augmentation:   1 thread {notebook_rates[0]:7.0f} samples/s   "
              f"2 threads as Keras feeds fit {notebook_rates[1]:7.0f} samples/s")
        for name in ("none", "flip", "flip_dropout"):
            cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "augmentation" / f"{name}.yaml")
            make = lambda workers: TileBatches(sources, candidates, y, batch, augment=build_augmentation(cfg, seed=0),  # noqa: E731
                                               shuffle=True, workers=workers)
            ours = (one_thread(make(1)), as_keras_feeds(make(2)))
            print(f"hms, augmentation={name:13s}  1 thread {ours[0]:7.0f} samples/s ({ours[0] / notebook_rates[0]:4.1f}x the notebook)   "
                  f"2 threads {ours[1]:7.0f} samples/s ({ours[1] / notebook_rates[1]:4.1f}x)")


if __name__ == "__main__":
    main()
