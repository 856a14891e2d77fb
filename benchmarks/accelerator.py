"""Fit throughput on whatever devices this process sees, one table: B0 and B2 on 128x256x8 tiles, batch 32 and 64,
fed four ways, in both precisions, with the device memory each used.

    python benchmarks/accelerator.py                                   # the full table (meant for a GPU)
    KERAS_BACKEND=jax python benchmarks/accelerator.py                 # the same on JAX (a machine without TensorFlow)
    python benchmarks/accelerator.py --tile 32 64 --batches 16 --steps 3 --backbones efficientnet_b0   # a CPU-sized table

Feeds, each `fit` over `--steps` batches after a warm-up fit that builds and compiles the step:
- memory: the same tiles as one in-memory array (the ceiling the others are divided by);
- tiles: the tile-cache pipeline (`input=both`, finished tiles in memory maps, `TileBatches` with 2 threads);
- eeg_layer: random windows (`data.sampling=random`), Kaggle tiles from the cache and raw pairs from the per-file
  cache, EEG spectrograms made by the model's layer;
- eeg1d: the 1D CNN on the raw-EEG signals of the per-file cache (its own model; the backbone column is not used).
Precisions: float32, and mixed (mixed_bfloat16 where `precision=auto` would pick it, else mixed_float16). Memory:
the device's peak bytes in use (GPU), or this process's peak resident set (CPU).
"""

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def peak_memory() -> str:
    import keras

    if keras.backend.backend() == "jax":
        import jax

        device = jax.local_devices()[0]
        stats = device.memory_stats() if device.platform == "gpu" else None
        if stats:
            return f"{stats.get('peak_bytes_in_use', 0) / 2**30:.2f} GiB on {device.device_kind}"
    else:
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return f"{tf.config.experimental.get_memory_info('GPU:0')['peak'] / 2**30:.2f} GiB on GPU:0"
    return f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB RSS (CPU)"


def reset_peak() -> None:
    import keras

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            tf.config.experimental.reset_memory_stats("GPU:0")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbones", nargs="+", default=["efficientnet_b0", "efficientnet_b2"])
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--tile", type=int, nargs=2, default=(128, 256))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed"])
    parser.add_argument("--eegs", type=int, default=200, help="eeg_ids of the synthetic set the pipelines read")
    args = parser.parse_args()
    import keras
    import numpy as np

    from hms.backends import resolved_source
    from hms.batches import TileBatches
    from hms.config import compose
    from hms.dataset import load_train
    from hms.devices import configure
    from hms.inputs import build_features, train_items
    from hms.representations import model_for
    from hms.synthetic import SynthSpec, ensure_dataset

    backend = keras.backend.backend()
    tile = tuple(args.tile)
    root = ensure_dataset(Path(tempfile.gettempdir()) / f"hms-bench-accel-n{args.eegs}",
                          SynthSpec(eegs=args.eegs, patients=max(1, args.eegs // 5), seed=23, test_eegs=4), progress=False)
    samples, windows = load_train(root)
    store = tempfile.mkdtemp(prefix="hms-accel-")
    common = ["data=kaggle", f"data.root={root}", f"paths.root={store}", f"input.tile=[{tile[0]},{tile[1]}]", "data.workers=2"]
    devices = configure(compose(common).trainer)
    mixed = "mixed_float16"
    if devices.precision.startswith("mixed"):
        mixed = devices.precision
    print(f"backend {backend}; {devices.description}; tile {tile[0]}x{tile[1]}; {args.steps} steps a figure", flush=True)
    feeds = {"tiles": ["input=both", "data.cache=tiles"], "eeg_layer": ["input=eeg_layer", "data.sampling=random"],
             "eeg1d": ["input=eeg1d", "backbone=eeg1d_cnn", "data.sampling=random"]}
    print(f"| backbone | batch | precision | feed | samples/s | / memory | peak memory |")
    print(f"| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.backbones:
        for batch in args.batches:
            n = batch * args.steps
            rng = np.random.default_rng(0)
            y = rng.dirichlet(np.ones(6), n).astype("float32")
            for precision in args.precisions:
                policy = "float32" if precision == "float32" else mixed
                keras.mixed_precision.set_global_policy(policy)
                rates = {}
                source = f"backbone.source={resolved_source('auto', backend)}"
                for feed, overrides in (("memory", ["input=both"]), *feeds.items()):
                    cfg = compose([*common, f"backbone={name}", source, *overrides]) if feed != "eeg1d" else \
                        compose([*common, *overrides])
                    reset_peak()
                    model = model_for(cfg, steps_per_epoch=100)
                    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.KLDivergence())
                    if feed == "memory":
                        x = rng.normal(size=(n, *tile, 8)).astype("float32")
                        model.fit(x[:2 * batch], y[:2 * batch], batch_size=batch, epochs=1, verbose=0)
                        start = time.perf_counter()
                        model.fit(x, y, batch_size=batch, epochs=1, verbose=0)
                    else:
                        items = train_items(samples, windows, cfg.data.sampling)
                        sources = [cache.features for cache in build_features(cfg, root, "train", items, progress=False).values()]
                        rows = rng.integers(0, len(items), n)
                        data = TileBatches(sources, rows, y, batch, workers=2, shuffle=True)
                        warm = TileBatches(sources, rows[:2 * batch], y[:2 * batch], batch, workers=2)
                        model.fit(warm, epochs=1, verbose=0)
                        start = time.perf_counter()
                        model.fit(data, epochs=1, verbose=0)
                    rates[feed] = n / (time.perf_counter() - start)
                    print(f"| {name if feed != 'eeg1d' else 'eeg1d_cnn'} | {batch} | {policy} | {feed} | {rates[feed]:.1f} | "
                          f"{rates[feed] / rates['memory']:.2f} | {peak_memory()} |", flush=True)
    keras.mixed_precision.set_global_policy("float32")


if __name__ == "__main__":
    main()
