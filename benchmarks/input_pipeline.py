"""Input pipeline throughput at full size (128x256x8) with augmentation vs the seed's per-sample batch assembly.

    python benchmarks/input_pipeline.py [--samples 2048] [--batch 32]

Baseline (the seed's DataGenerator): for each sample, slice its Kaggle spectrogram from an in-memory
dict, clip/log/standardise each region and pad it, copy its EEG spectrogram: one core, no augmentation.
Ours: TileBatches reading the float16 memory-mapped cache, with the seed's flip + coarse dropout
(augmentation=flip_dropout) and with the time flip alone, single-threaded and as Keras runs it
(2 worker threads). Prints samples/s and ratios.
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


def seed_generator(spectrograms, eeg_specs, rows, batch):
    """The seed's __data_generation, one batch (Chris Deotte's EfficientNet starter)."""
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


def rate(fn, batches, batch):
    fn(0)
    start = time.perf_counter()
    for b in range(batches):
        fn(b)
    return batches * batch / (time.perf_counter() - start)


def keras_rate(dataset, batches, batch):
    """Samples/s as Keras's fit consumes a PyDataset (its worker threads prefetching)."""
    from keras.src.trainers.data_adapters.py_dataset_adapter import PyDatasetAdapter

    adapter = PyDatasetAdapter(dataset, shuffle=False)
    iterator = adapter.get_numpy_iterator()
    next(iterator)
    start = time.perf_counter()
    count = 0
    for _ in range(batches - 1):
        x, _ = next(iterator)
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
    batches = n // batch
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
        seed_rate = rate(lambda b: seed_generator(spectrograms, eeg_specs, rows, range(b * batch, (b + 1) * batch)), batches, batch)
        print(f"seed per-sample assembly (1 core, no augmentation): {seed_rate:8.0f} samples/s")
        for name in ("flip", "flip_dropout"):
            cfg = OmegaConf.load(Path(__file__).resolve().parent.parent / "conf" / "augmentation" / f"{name}.yaml")
            one = TileBatches(sources, candidates, y, batch, augment=build_augmentation(cfg, seed=0), shuffle=True)
            single = rate(lambda b: one[b], batches, batch)
            two = TileBatches(sources, candidates, y, batch, augment=build_augmentation(cfg, seed=0), shuffle=True, workers=2)
            threaded = keras_rate(two, batches, batch)
            print(f"hms, augmentation={name:13s} 1 thread: {single:8.0f} samples/s ({single / seed_rate:4.1f}x the seed)   "
                  f"as Keras feeds fit, 2 threads: {threaded:8.0f} samples/s ({threaded / seed_rate:4.1f}x)")


if __name__ == "__main__":
    main()
