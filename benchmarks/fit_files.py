"""`fit` throughput with window tiles made per batch (data.cache=files) vs read finished (data.cache=tiles).

    python benchmarks/fit_files.py [--eegs 60] [--tile 128x256] [--backbone efficientnet_b0] [--batch 16] [--steps 12]

One synthetic Kaggle-layout dataset, every labelled window an item (data.sampling=random); both caches built
for it first (not timed). The same compiled model then trains the same number of steps from each, in one
process, with the real input pipeline (TileBatches, 2 worker threads, flip augmentation), a warm-up pass
first; the tile cache is timed before and after the per-file cache and averaged. Prints samples/s and the
ratio files / tiles (1.0: making the tiles per batch costs the training nothing).
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=60)
    parser.add_argument("--tile", default="128x256")
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    import keras
    import numpy as np
    from omegaconf import OmegaConf

    from hms.augment import build_augmentation
    from hms.batches import TileBatches
    from hms.dataset import load_train
    from hms.features.cache import FeatureOptions, build_caches
    from hms.features.files import build_window_caches
    from hms.inputs import train_items
    from hms.metrics import kl_loss
    from hms.models import build_model
    from hms.synthetic import SynthSpec, ensure_dataset

    tile = tuple(int(v) for v in args.tile.split("x"))
    root = ensure_dataset(Path(tempfile.gettempdir()) / f"hms-bench-n{args.eegs}-p{max(1, args.eegs // 8)}",
                          SynthSpec(eegs=args.eegs, patients=max(1, args.eegs // 8), seed=11, test_eegs=8), progress=False)
    samples, windows = load_train(root)
    items = train_items(samples, windows, "random")
    n = min(len(items), args.batch * args.steps)
    y = np.random.default_rng(0).dirichlet(np.ones(6), n).astype(np.float32)
    augment = build_augmentation(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.5, "coarse_dropout": 0.0}), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        options = FeatureOptions(tile=tile, cache_dir=tmp, progress=False)
        kinds = ("kaggle", "eeg")
        sources = {"tiles": build_caches(root, "train", kinds, items, options),
                   "files": build_window_caches(root, "train", kinds, items, options)}
        rows = np.random.default_rng(1).choice(len(items), n, replace=False)
        model = build_model(args.backbone, tile, 2, bn_momentum=0.9)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=kl_loss)
        rates = {}
        for name in ("tiles", "files", "tiles "):
            caches = sources[name.strip()]
            batches = TileBatches([caches[k].features for k in kinds], rows[:, None], y, args.batch, augment=augment,
                                  shuffle=True, workers=2)
            model.fit(batches, epochs=1, verbose=0, steps_per_epoch=2)  # warm-up: tracing, first reads
            start = time.perf_counter()
            model.fit(batches, epochs=1, verbose=0)
            rates[name] = n / (time.perf_counter() - start)
            print(f"data.cache={name:6s} {rates[name]:7.2f} samples/s", flush=True)
    tiles = (rates["tiles"] + rates["tiles "]) / 2
    print(f"{args.backbone} on {tile[0]}x{tile[1]}x8 tiles, batch {args.batch}, {n} random windows of {args.eegs} eeg_ids: "
          f"files / tiles = {rates['files'] / tiles:.2f}")


if __name__ == "__main__":
    main()
