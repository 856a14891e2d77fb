"""Raw-EEG input (input=eeg1d): windows/s made from the per-file cache, bytes per window, and `fit` of a 1D
backbone fed by the real pipeline against the same model fed from in-memory tensors.

    python benchmarks/signal_pipeline.py [--eegs 300] [--backbone eeg1d_cnn] [--batch 32] [--samples 1024]

On a synthetic Kaggle-layout set (generated once), every labelled window an item (data.sampling=random):
- the per-file EEG cache is built first (not timed); its bytes on disk over the windows it serves;
- windows/s of `SignalWindows` (decompress, pairs, band-pass, downsample), batches of 32 in random order, on 1
  thread and on 2 threads as the trainer's PyDataset runs them, made from the files (its memo off, as in a first
  epoch) and read back from its memo (later epochs);
- `fit` samples/s of the backbone (50 Hz, 2,500 x 16 inputs) with TileBatches over those windows (signal
  augmentation on) and with the same windows as in-memory tensors (no augmentation), a warm-up epoch each,
  the in-memory side timed before and after and averaged. Ratio 1.0: the pipeline costs the training nothing.
  The pipeline is timed with its memo (the default) and without (every window made again each epoch).
"""

import argparse
import os
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=300)
    parser.add_argument("--backbone", default="eeg1d_cnn")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--samples", type=int, default=1024)
    args = parser.parse_args()
    import keras
    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from hms.augment import build_signal_augmentation
    from hms.batches import TileBatches
    from hms.config import compose
    from hms.representations import representation_for
    from hms.dataset import load_train
    from hms.features.cache import FeatureOptions
    from hms.features.files import build_window_caches
    from hms.inputs import train_items
    from hms.metrics import kl_loss
    from hms.models import build_signal_model
    from hms.synthetic import SynthSpec, ensure_dataset

    patients = max(1, args.eegs // 8)
    root = ensure_dataset(Path(tempfile.gettempdir()) / f"hms-bench-n{args.eegs}-p{patients}",
                          SynthSpec(eegs=args.eegs, patients=patients, seed=11, test_eegs=8), progress=False)
    samples, windows = load_train(root)
    items = train_items(samples, windows, "random")
    with tempfile.TemporaryDirectory() as tmp:
        parts = representation_for(compose(["input=eeg1d", "backbone=eeg1d_cnn"])).parts()  # the 1D runs' signals
        signals = build_window_caches(root, "train", parts, items, FeatureOptions(cache_dir=tmp, progress=False))[parts[0].name]
        stored = sum(p.stat().st_size for p in Path(tmp).rglob("*") if p.is_file())
        print(f"{len(items)} random windows of {samples.eeg_id.nunique()} eeg_ids; per-file EEG cache {stored / 1e6:.1f} MB = "
              f"{stored / len(items) / 1e3:.1f} kB per window (a window's float32 signal: {2500 * 16 * 4 / 1e3:.0f} kB)")
        n = min(args.samples, len(items))
        rows = np.random.default_rng(0).choice(len(items), n, replace=False)
        chunks = [np.sort(rows[i:i + args.batch]) for i in range(0, n, args.batch)]
        cached = signals.features
        cold = cached.with_memo(0)
        cold[chunks[0]]  # warm-up: first reads
        for threads in (1, 2):  # every window made from the files (as in a first epoch)
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(cold.__getitem__, chunks))
            print(f"SignalWindows, made, {threads} thread(s): {n / (time.perf_counter() - start):7.1f} windows/s", flush=True)
        list(map(cached.__getitem__, chunks))  # fills its memo
        start = time.perf_counter()
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(cached.__getitem__, chunks))
        print(f"SignalWindows, kept in memory, 2 threads: {n / (time.perf_counter() - start):7.1f} windows/s", flush=True)

        y = np.random.default_rng(1).dirichlet(np.ones(6), n).astype(np.float32)
        augment = build_signal_augmentation(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.5, "time_shift": 0.5,
                                                             "channel_dropout": 0.05, "amplitude": 0.5}), seed=0)
        pipeline = TileBatches([cached], rows[:, None], y, args.batch, augment=augment, shuffle=True, workers=2)
        unkept = TileBatches([cold], rows[:, None], y, args.batch, augment=augment, shuffle=True, workers=2)
        x_memory = cached[np.sort(rows)]
        in_memory = tf.data.Dataset.from_tensor_slices((x_memory, y)).shuffle(n).batch(args.batch).prefetch(2)
        model = build_signal_model(args.backbone, 2500, 16, bn_momentum=0.9)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=kl_loss)
        rates = {}
        for name, data in (("in-memory tensors", in_memory), ("hms pipeline", pipeline), ("pipeline, no memo", unkept),
                           ("in-memory tensors ", in_memory)):
            model.fit(data, epochs=1, verbose=0)  # warm-up: tracing, first reads
            start = time.perf_counter()
            model.fit(data, epochs=1, verbose=0)
            rates[name] = n / (time.perf_counter() - start)
            print(f"fit, {name:18s} {rates[name]:7.1f} samples/s", flush=True)
    memory = (rates["in-memory tensors"] + rates["in-memory tensors "]) / 2
    print(f"{args.backbone}, batch {args.batch}: pipeline / in-memory = {rates['hms pipeline'] / memory:.2f} "
          f"(windows made every epoch, memo_bytes=0: {rates['pipeline, no memo'] / memory:.2f})")


if __name__ == "__main__":
    main()
