"""`fit` throughput with the real input pipeline vs the same model fed from in-memory tensors.

    python benchmarks/fit_throughput.py [--backbone efficientnet_b0] [--tile 16x32] [--samples 768] [--batch 32]

Both fits train the same compiled model for the same steps in one process (a warm-up epoch first);
the pipeline reads the float16 memory-mapped cache, draws windows and runs the flip augmentation.
Prints samples/s and their ratio (1.0: the pipeline costs nothing).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hms.augment import build_augmentation  # noqa: E402
from hms.batches import TileBatches  # noqa: E402
from hms.features.cache import _create, open_cache  # noqa: E402


def main():
    import keras
    import tensorflow as tf

    from hms.metrics import kl_loss
    from hms.models import build_model

    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--tile", default="16x32")
    parser.add_argument("--samples", type=int, default=768)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    tile = tuple(int(v) for v in args.tile.split("x"))
    n = args.samples
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(6), n).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        items = pd.DataFrame({"eeg_id": np.arange(n), "spectrogram_id": np.arange(n), "eeg_offset": 0.0, "spec_offset": 0.0})
        sources = []
        for kind in ("kaggle", "eeg"):
            _create(Path(tmp) / kind, items, tile, {})
            features = np.load(Path(tmp) / kind / "features.npy", mmap_mode="r+")
            features[:] = rng.normal(size=features.shape).astype(np.float16)
            features.flush()
            sources.append(open_cache(Path(tmp) / kind).features)
        augment = build_augmentation(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.0, "coarse_dropout": 0.0}), seed=0)
        pipeline = TileBatches(sources, np.arange(n), y, args.batch, augment=augment, shuffle=True, workers=2)
        x_memory = np.concatenate([np.asarray(s, np.float32) for s in sources], axis=-1)
        in_memory = tf.data.Dataset.from_tensor_slices((x_memory, y)).shuffle(n).batch(args.batch).prefetch(2)

        model = build_model(args.backbone, tile, 2, bn_momentum=0.9)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=kl_loss)
        rates = {}
        for name, data in (("in-memory tensors", in_memory), ("hms pipeline", pipeline), ("in-memory tensors ", in_memory)):
            model.fit(data, epochs=1, verbose=0)  # warm-up: tracing, first reads
            start = time.perf_counter()
            model.fit(data, epochs=args.epochs, verbose=0)
            rates[name] = args.epochs * n / (time.perf_counter() - start)
            print(f"{name:18s} {rates[name]:7.1f} samples/s")
    memory = (rates["in-memory tensors"] + rates["in-memory tensors "]) / 2
    print(f"{args.backbone} on {tile[0]}x{tile[1]}x8 tiles, batch {args.batch}: "
          f"pipeline / in-memory = {rates['hms pipeline'] / memory:.2f}")


if __name__ == "__main__":
    main()
