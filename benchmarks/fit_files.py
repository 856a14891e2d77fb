"""`fit` throughput with window tiles made per batch (data.cache=files) vs read finished (data.cache=tiles).

    python benchmarks/fit_files.py [--eegs 60] [--tile 128x256] [--backbone efficientnet_b0] [--batch 16] [--steps 12]
    python benchmarks/fit_files.py --root DIR --cache-dir CACHE [--steps 6]   # a Kaggle-size set (benchmarks/scale.py)

One synthetic Kaggle-layout dataset, every labelled window an item (data.sampling=random); both caches built
for it first (not timed). With --root (a set too large for a tile cache of every window, such as scale.py's
Kaggle-size one) the per-file cache holds every file of the set (reused from --cache-dir if built there) and the
tile cache only the windows that are trained on, so the files side reads from the whole cache. The same compiled model then trains the same number of steps from each, in one
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
from dataclasses import replace  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402


class Sliced:
    """The tiles of some windows, indexed by the rows those windows have in the whole set."""

    def __init__(self, tiles, rows):
        self.tiles = tiles
        self.position = {int(r): k for k, r in enumerate(rows)}
        self.shape = (max(self.position) + 1, *tiles.shape[1:])

    def __getitem__(self, rows):
        return self.tiles[np.array([self.position[int(r)] for r in np.atleast_1d(rows)])]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--eegs", type=int, default=60)
    parser.add_argument("--tile", default="128x256")
    parser.add_argument("--backbone", default="efficientnet_b0")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--root", type=Path, default=None, help="a Kaggle-layout set instead of a generated one")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where the per-file cache of --root is (or goes)")
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
    root = args.root or ensure_dataset(Path(tempfile.gettempdir()) / f"hms-bench-n{args.eegs}-p{max(1, args.eegs // 8)}",
                                       SynthSpec(eegs=args.eegs, patients=max(1, args.eegs // 8), seed=11, test_eegs=8),
                                       progress=False)
    samples, windows = load_train(root)
    items = train_items(samples, windows, "random")
    n = min(len(items), args.batch * args.steps)
    picked = np.sort(np.random.default_rng(1).choice(len(items), n, replace=False))
    y = np.random.default_rng(0).dirichlet(np.ones(6), n).astype(np.float32)
    augment = build_augmentation(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.5, "coarse_dropout": 0.0}), seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        options = FeatureOptions(tile=tile, cache_dir=tmp, progress=False)
        kinds = ("kaggle", "eeg")
        files = build_window_caches(root, "train", kinds, items, replace(options, cache_dir=str(args.cache_dir or tmp)))
        if args.root is None:  # every window in both caches
            sources, rows = {"tiles": build_caches(root, "train", kinds, items, options), "files": files}, picked
        else:  # the tile cache holds only the trained windows: the same windows, by their rows in each cache
            tiles = build_caches(root, "train", kinds, items.iloc[picked].reset_index(drop=True), options)
            sources = {"tiles": {k: SimpleNamespace(features=Sliced(tiles[k].features, picked)) for k in kinds}, "files": files}
            rows = picked
        rows = np.random.default_rng(2).permutation(rows)
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
    print(f"{args.backbone} on {tile[0]}x{tile[1]}x8 tiles, batch {args.batch}, {n} random windows of {samples.eeg_id.nunique()} eeg_ids: "
          f"files / tiles = {rates['files'] / tiles:.2f}")


if __name__ == "__main__":
    main()
