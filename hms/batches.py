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
    `weights` (one per sample): batches are (x, y, w), and Keras weights each sample's loss by w (mixed with the
    same Beta weight as its inputs under mixup).
    """

    def __init__(self, sources, candidates, targets, batch_size: int, augment=None, shuffle: bool = False,
                 seed: int = 0, workers: int = 1, view=None, mixup: float = 0.0, multiple: int = 1, shard=(0, 1), weights=None, **kwargs):
        super().__init__(workers=workers, use_multiprocessing=False, **kwargs)
        self.sources = list(sources)
        self.candidates = [np.atleast_1d(np.asarray(c)) for c in candidates]
        self.targets = np.asarray(targets, np.float32)
        self.weights = None if weights is None else np.asarray(weights, np.float32)
        if self.weights is not None and self.weights.shape != (len(self.targets),):
            raise ValueError(f"weights: one per sample expected ({len(self.targets)}), got shape {self.weights.shape}")
        self.batch_size = batch_size
        self.augment = augment
        self.shuffle = shuffle
        self.view = view  # a deterministic transform of whole batches (test-time augmentation)
        self.mixup = float(mixup)
        # JAX's data parallelism splits every batch evenly over the devices: a last, partial batch is filled up to a
        # multiple of them with its own first items again (`predict_views` drops their predictions).
        self.multiple = int(multiple)
        # A run spread over several processes (trainer.distributed): process k of n feeds the k-th of n equal slices of
        # every global batch (JAX assembles the global batch from them), built whole here so each slice is the one a
        # single process would have put there.
        self.shard = (int(shard[0]), int(shard[1]))
        self.rng = np.random.default_rng(seed)
        # Sources of the same item shape but the last axis are one model input, side by side on that axis; a
        # representation whose parts differ in shape (tiles beside raw pairs) gets one input each, as a tuple.
        self.groups: list[list[int]] = []
        for k, source in enumerate(self.sources):
            same = [g for g in self.groups if self.sources[g[0]].shape[1:-1] == source.shape[1:-1]]
            same[0].append(k) if same else self.groups.append([k])
        self.shapes = [(*self.sources[g[0]].shape[1:-1], sum(self.sources[k].shape[-1] for k in g)) for g in self.groups]
        self.shape = self.shapes[0]
        self._draw()

    def _draw(self) -> None:
        self.order = self.rng.permutation(len(self.targets)) if self.shuffle else np.arange(len(self.targets))
        self.rows = np.array([c[self.rng.integers(len(c))] if len(c) > 1 else c[0] for c in self.candidates])
        self.epoch_seed = int(self.rng.integers(2**31))  # each batch's augmentations are drawn from it and the index

    def __len__(self) -> int:
        return int(np.ceil(len(self.targets) / self.batch_size))

    def on_epoch_end(self) -> None:
        if self.shuffle or any(len(c) > 1 for c in self.candidates):
            self._draw()

    def __getitem__(self, index: int):
        picked = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        if len(picked) % self.multiple:
            picked = np.concatenate([picked, picked[np.arange(self.multiple - len(picked) % self.multiple) % len(picked)]])
        augment = None
        if self.augment is not None:
            from .augment import reseeded

            augment = reseeded(self.augment, int(np.random.SeedSequence([self.epoch_seed, index]).generate_state(1)[0]))
        x, y = self.tiles(self.rows[picked], augment), self.targets[picked]
        w = None if self.weights is None else self.weights[picked]
        if self.mixup > 0 and len(picked) > 1:
            # Its own generator per batch (seeded by the epoch's draw and the index): threads may build batches
            # in any order, and the same batch is mixed the same way.
            rng = np.random.default_rng([int(self.rows[picked[0]]), int(picked[0]), index])
            partner = rng.permutation(len(picked))
            weight = rng.beta(self.mixup, self.mixup, size=len(picked)).astype(np.float32)
            mix = lambda a: (weight.reshape(-1, *([1] * (a.ndim - 1))) * a  # noqa: E731
                             + (1 - weight.reshape(-1, *([1] * (a.ndim - 1)))) * a[partner])
            x = tuple(mix(a) for a in x) if isinstance(x, tuple) else mix(x)
            y = weight[:, None] * y + (1 - weight[:, None]) * y[partner]
            w = None if w is None else weight * w + (1 - weight) * w[partner]
        if self.view is not None:
            x = self.view(x)
            x = tuple(np.ascontiguousarray(a) for a in x) if isinstance(x, tuple) else np.ascontiguousarray(x)
        index, count = self.shard
        if count > 1:
            part = slice(index * len(y) // count, (index + 1) * len(y) // count)
            x = tuple(a[part] for a in x) if isinstance(x, tuple) else x[part]
            y = y[part]
            w = None if w is None else w[part]
        return (x, y) if w is None else (x, y, w)

    def tiles(self, rows: np.ndarray, augment=False):
        """The inputs of cache `rows` (augmented by `augment`, or by the batches' own augmentation if not given), kinds
        side by side on the channel axis: one array, or a tuple of one array per input where the sources differ in shape."""
        augment = self.augment if augment is False else augment
        order = np.argsort(rows)  # read the memory maps in file order
        inputs = []
        for group, shape in zip(self.groups, self.shapes):
            x = np.empty((len(rows), *shape), np.float32)
            channel = 0
            for k in group:
                width = self.sources[k].shape[-1]
                x[order, ..., channel:channel + width] = self.sources[k][rows[order]]
                channel += width
            inputs.append(x)
        if len(inputs) == 1:
            x = inputs[0]
            if augment is not None:
                for i in range(len(x)):
                    x[i] = augment(image=x[i])["image"]
            return x
        if augment is not None:
            for i in range(len(rows)):
                for x, part in zip(inputs, augment(image=tuple(x[i] for x in inputs))["image"]):
                    x[i] = part
        return tuple(inputs)


def predict_views(model, batches: TileBatches, views) -> np.ndarray:
    """The model's probabilities on unshuffled `batches`, averaged over test-time `views`."""
    import copy

    out = []
    for view in views:
        viewed = copy.copy(batches)  # the caller's batches stay as they are
        viewed.view = view
        out.append(model.predict(viewed, verbose=0).astype(np.float64)[:len(batches.targets)])  # no fill-up rows
    return np.mean(out, axis=0)
