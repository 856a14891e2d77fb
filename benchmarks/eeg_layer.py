"""The EEG spectrogram as Keras ops on the accelerator vs the backbone's training step beside it.

    python benchmarks/eeg_layer.py [--batch 32] [--backbone efficientnet_b0] [--steps 20]

Issue 16 asks where per-batch EEG spectrograms should be made: in the batch workers (numpy, `hms.features.eeg`,
about 180 EEGs/s per core here) or as a layer on the accelerator. This script writes the same formula with
`keras.ops` (the bipolar pairs, centred frames, the half-window DFT products, the two-bin mel gathers, the
per-pair dB reference and clip, the region means), checks it against the numpy function on one batch, then
times, in one process and on whatever device Keras uses, one batch's spectrograms and one training step of the
backbone on the 128x256x8 montage. Prints EEGs/s of the layer and its time as a fraction of a training step.
NaN filling is left to the batch workers (it is per-window bookkeeping, not arithmetic). On a GPU the layer's
matmuls run at full float32 precision (JAX's default TF32 moves dB values by up to 7e-3; the contract allows 1e-3),
the backbone at its default.

On a GPU machine with JAX but no TensorFlow: KERAS_BACKEND=jax python benchmarks/eeg_layer.py
"""

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def spectrogram_ops(x):
    """(batch, 10000, 20) float32 EEG windows (no NaN) -> (batch, 128, 256, 4) tiles, with keras.ops."""
    import numpy as np
    from keras import ops

    from hms.features.eeg import AMIN, N_MELS, PAIRS, TOP_DB, WIDTH, WIN_LENGTH, _operators

    cos, sin, first, second, weights = _operators()
    half = WIN_LENGTH // 2
    n = x.shape[1]
    hop = n // WIDTH
    pairs = ops.take(x, PAIRS[:, 0], axis=2) - ops.take(x, PAIRS[:, 1], axis=2)  # (B, n, 16)
    pairs = ops.pad(ops.transpose(pairs, (0, 2, 1)), ((0, 0), (0, 0), (half, half)))  # centred frames, zeros beyond
    index = (np.arange(WIDTH)[:, None] * hop + np.arange(WIN_LENGTH + 1)[None, :]).astype("int32")
    frames = ops.take(pairs, index, axis=2)  # (B, 16, 256, 129)
    after, before = frames[..., half:], ops.flip(frames[..., :half + 1], axis=-1)  # x[64+m], x[64-m]
    both = ops.concatenate([after[..., :1], after[..., 1:half] + before[..., 1:half]], axis=-1)
    diff = after[..., 1:half] - before[..., 1:half]
    power = ops.square(ops.matmul(both, cos.astype("float32"))) + ops.square(ops.matmul(diff, sin.astype("float32")))
    mels = ops.take(power, first, axis=-1) * weights[0] + ops.take(power, second, axis=-1) * weights[1]  # (B, 16, 256, 128)
    db = ops.log10(ops.maximum(mels, AMIN))
    db = db - ops.max(db, axis=(2, 3), keepdims=True)
    db = ops.maximum(db, -TOP_DB / 10)
    regions = ops.mean(ops.reshape(db, (-1, 4, 4, WIDTH, N_MELS)), axis=2) * (10 / 40) + 1  # (B, 4, 256, 128)
    return ops.transpose(regions, (0, 3, 2, 1))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    import keras
    import numpy as np

    from hms.features.eeg import eeg_spectrograms
    from hms.models import build_model

    rng = np.random.default_rng(0)
    t = np.arange(10_000) / 200
    x = (rng.normal(0, 20, (args.batch, 10_000, 20)) + 50 * np.sin(2 * np.pi * 2 * t)[None, :, None]).astype("float32")
    layer = spectrogram_ops
    if keras.backend.backend() == "jax":
        import jax

        def exact(t):  # float32 matmuls in full: a GPU's default TF32 moves the dB values by up to 7e-3
            with jax.default_matmul_precision("highest"):
                return spectrogram_ops(t)

        layer = jax.jit(exact)
    reference = eeg_spectrograms(x[:4])
    ours = np.asarray(keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(x[:4]))))
    print(f"backend {keras.backend.backend()}, max |layer - numpy| on 4 windows: {np.abs(ours - reference).max():.2e}")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        layer = tf.function(spectrogram_ops)
    tensor = keras.ops.convert_to_tensor(x)
    keras.ops.convert_to_numpy(layer(tensor))  # compile
    start = time.perf_counter()
    for _ in range(args.steps):
        out = layer(tensor)
    keras.ops.convert_to_numpy(out)
    per_batch = (time.perf_counter() - start) / args.steps

    start = time.perf_counter()
    eeg_spectrograms(x)
    numpy_per_batch = time.perf_counter() - start

    source = "efficientnet" if keras.backend.backend() == "tensorflow" else "keras"  # the package is tf.keras only
    model = build_model(args.backbone, (128, 256), 2, source=source, bn_momentum=0.9)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=keras.losses.KLDivergence())
    tiles = rng.normal(size=(args.batch * args.steps, 128, 256, 8)).astype("float32")
    y = rng.dirichlet(np.ones(6), len(tiles)).astype("float32")
    model.fit(tiles[:args.batch * 2], y[:args.batch * 2], batch_size=args.batch, epochs=1, verbose=0)  # compile
    start = time.perf_counter()
    model.fit(tiles, y, batch_size=args.batch, epochs=1, verbose=0)
    step = (time.perf_counter() - start) / args.steps
    print(f"EEG spectrograms of a batch of {args.batch}: layer {per_batch * 1e3:.2f} ms ({args.batch / per_batch:,.0f} EEGs/s), "
          f"numpy in one thread {numpy_per_batch * 1e3:.0f} ms ({args.batch / numpy_per_batch:,.0f} EEGs/s)")
    print(f"{args.backbone} training step on 128x256x8, batch {args.batch}: {step * 1e3:.1f} ms; "
          f"layer / step = {per_batch / step:.3f}")


if __name__ == "__main__":
    main()
