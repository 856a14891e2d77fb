"""EEG spectrograms made by the model (`input=eeg_layer`) against precomputed tiles (`input=both`): fit throughput.

    python benchmarks/eeg_layer.py [--batch 32] [--backbone efficientnet_b0] [--steps 10] [--tile 128 256]
    KERAS_BACKEND=jax python benchmarks/eeg_layer.py     # a machine with JAX but no TensorFlow

In one process, on whatever device Keras uses:
1. the layer (`hms.representations.eeg_layer`) against the numpy tile path (`hms.features.eeg`, what the cache and
   the batch workers run) on 4 windows: the largest difference, after the tile cache's resize;
2. EEG spectrograms of one batch: the layer alone, and numpy in one thread (EEGs/s);
3. `model.fit` samples/s of the two runs' own models (`hms.representations.model_for`) on the same batches held in
   memory: `both` reads finished Kaggle + EEG tiles, `eeg_layer` reads Kaggle tiles + the 16 raw pairs and makes
   the EEG tiles itself. The ratio eeg_layer / both is what computing the spectrograms in the model costs a step.
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--tile", type=int, nargs=2, default=(128, 256))
    parser.add_argument("--precision", default="float32", help="float32, mixed_float16 or mixed_bfloat16")
    args = parser.parse_args()
    import keras
    import numpy as np

    from hms.config import compose
    from hms.constants import EEG_COLUMNS
    from hms.features.cache import _resize
    from hms.features.eeg import bipolar_pairs, eeg_spectrograms
    from hms.representations import model_for
    from hms.representations.eeg_layer import eeg_spectrogram_layer

    backend = keras.backend.backend()
    tile = tuple(args.tile)
    rng = np.random.default_rng(0)
    n = args.batch * args.steps
    t = np.arange(10_000) / 200
    windows = (rng.normal(0, 20, (args.batch, 10_000, len(EEG_COLUMNS)))
               + 50 * np.sin(2 * np.pi * 2 * t)[None, :, None]).astype("float32")
    pairs = np.moveaxis(bipolar_pairs(windows), 1, 2)  # (batch, 10000, 16)
    layer = eeg_spectrogram_layer(tile)
    reference = _resize(eeg_spectrograms(windows[:4]), tile)
    ours = keras.ops.convert_to_numpy(layer(pairs[:4]))
    print(f"backend {backend}, tile {tile[0]}x{tile[1]}: max |layer - numpy tile path| on 4 windows {np.abs(ours - reference).max():.2e}")

    compiled = layer
    if backend == "tensorflow":
        import tensorflow as tf

        compiled = tf.function(layer)
    elif backend == "jax":
        import jax

        compiled = jax.jit(layer)
    keras.ops.convert_to_numpy(compiled(pairs))  # compile
    start = time.perf_counter()
    for _ in range(args.steps):
        out = compiled(pairs)
    keras.ops.convert_to_numpy(out)
    per_batch = (time.perf_counter() - start) / args.steps
    start = time.perf_counter()
    eeg_spectrograms(windows)
    numpy_per_batch = time.perf_counter() - start
    print(f"EEG spectrograms of a batch of {args.batch}: layer {per_batch * 1e3:.1f} ms ({args.batch / per_batch:,.0f} EEGs/s), "
          f"numpy in one thread {numpy_per_batch * 1e3:.0f} ms ({args.batch / numpy_per_batch:,.0f} EEGs/s)")

    source = "efficientnet" if backend == "tensorflow" else "keras"  # the efficientnet package needs TensorFlow
    common = [f"backbone={args.backbone}", f"backbone.source={source}", f"input.tile=[{tile[0]},{tile[1]}]"]
    all_pairs = np.concatenate([pairs] * args.steps)[:n]
    kaggle = rng.normal(size=(n, *tile, 4)).astype("float32")
    eeg = np.concatenate([keras.ops.convert_to_numpy(compiled(pairs))] * args.steps)[:n]
    y = rng.dirichlet(np.ones(6), n).astype("float32")
    rates = {}
    keras.mixed_precision.set_global_policy(args.precision)
    for name, x in (("both", np.concatenate([kaggle, eeg], axis=-1)), ("eeg_layer", (kaggle, all_pairs))):
        model = model_for(compose([f"input={name}", *common]), steps_per_epoch=100)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.KLDivergence())
        head = (lambda a: tuple(p[:2 * args.batch] for p in a)) if isinstance(x, tuple) else (lambda a: a[:2 * args.batch])
        model.fit(head(x), y[:2 * args.batch], batch_size=args.batch, epochs=1, verbose=0)  # build and compile the step
        start = time.perf_counter()
        model.fit(x, y, batch_size=args.batch, epochs=1, verbose=0)
        rates[name] = n / (time.perf_counter() - start)
        print(f"fit {args.backbone} input={name:9s} {tile[0]}x{tile[1]} batch {args.batch} ({args.precision}): "
              f"{rates[name]:8.1f} samples/s", flush=True)
    print(f"eeg_layer / both (precomputed tiles) fit throughput: {rates['eeg_layer'] / rates['both']:.2f}")


if __name__ == "__main__":
    main()
