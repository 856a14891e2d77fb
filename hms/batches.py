"""Batches from the feature caches for Keras (tiles, or raw-EEG signals): per-epoch shuffling, window
sampling, augmentation and mixup."""

from __future__ import annotations

import numpy as np
import keras


class TileBatches(keras.utils.PyDataset):
    """(x, y) batches: x (batch, H, W, 4 * kinds) float32 tiles, or (batch, samples, 16) raw-EEG signals, from
    the caches; y the vote distributions. Sources are concatenated on their last axis.

    `candidates[i]` holds the cache rows sample i may be drawn from: one row (its fixed window), or
    all its labelled windows, one chosen at random each epoch (data.sampling=random).
    `mixup` > 0: each batch is mixed with a shuffled copy of itself, inputs and vote distributions with the same
    weight drawn from Beta(mixup, mixup) per sample (a mixture of two distributions is what a KL loss can fit).
    """

    def __init__(self, sources, candidates, targets, batch_size: int, augment=None, shuffle: bool = False,
                 seed: int = 0, workers: int = 1, view=None, mixup: float = 0.0, **kwargs):
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        self.sources = list(sources)
        self.candidates = [np.atleast_1d(np.asarray(c)) for c in candidates]
        self.targets = np.asarray(targets, np.float32)
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.view = view  # a deterministic transform of whole batches (test-time augmentation)
        self.mixup = float(mixup)
        self.rng = np.random.default_rng(seed)
        self.shape = (*self.sources[0].shape[1:-1], sum(source.shape[-1] for source in self.sources))
        self._draw()

    def _draw(self) -> None:
        self.order = self.rng.permutation(len(self.targets)) if self.shuffle else np.arange(len(self.targets))
        self.rows = np.array([c[self.rng.integers(len(c))] if len(c) > 1 else c[0] for c in self.candidates])

    def __len__(self) -> int:
        return int(np.ceil(len(self.targets) / self.batch_size))

    def on_epoch_end(self) -> None:
        if self.shuffle or any(len(c) > 1 for c in self.candidates):
            self._draw()

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        x, y = self.tiles(self.rows[picked]), self.targets[picked]
        if self.mixup > 0 and len(picked) > 1:
            # Its own generator per batch (seeded by the epoch's draw and the index): threads may build batches
            # in any order, and the same batch is mixed the same way.
            rng = np.random.default_rng([int(self.rows[picked[0]]), int(picked[0]), index])
            partner = rng.permutation(len(picked))
            weight = rng.beta(self.mixup, self.mixup, size=len(picked)).astype(np.float32)
            x = weight.reshape(-1, *([1] * (x.ndim - 1))) * x + (1 - weight.reshape(-1, *([1] * (x.ndim - 1)))) * x[partner]
            y = weight[:, None] * y + (1 - weight[:, None]) * y[partner]
        return (x if self.view is None else np.ascontiguousarray(self.view(x))), y

    def tiles(self, rows: np.ndarray) -> np.ndarray:
        """Tiles of cache `rows` (augmented if configured), kinds side by side on the channel axis."""
        order = np.argsort(rows)  # read the memory maps in file order
        x = np.empty((len(rows), *self.shape), np.float32)
        channel = 0
        for source in self.sources:
            width = source.shape[-1]
            x[order, ..., channel:channel + width] = source[rows[order]]
            channel += width
        if self.augment is not None:
            for i in range(len(x)):
                x[i] = self.augment(image=x[i])["image"]
        return x


def predict_views(model, batches: TileBatches, views) -> np.ndarray:
    """The model's probabilities on unshuffled `batches`, averaged over test-time `views`."""
    import copy

    out = []
    for view in views:
        viewed = copy.copy(batches)  # the caller's batches stay as they are
        viewed.view = view
        out.append(model.predict(viewed, verbose=0).astype(np.float64))
    return np.mean(out, axis=0)
