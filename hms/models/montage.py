"""The model: tiles laid out as one image, a backbone, and a float32 softmax over the six classes."""

from __future__ import annotations

import weakref

import keras
import numpy as np
from keras import layers, ops

from ..constants import CLASSES
from .backbones import create_backbone


@keras.saving.register_keras_serializable(package="hms")
class TileMontage(layers.Layer):
    """(batch, H, W, 4k) tiles to one (batch, 4H, kW, 3) image: each kind's 4 tiles stacked vertically,
    the kinds side by side (Kaggle left, EEG right), repeated to 3 channels, as the notebook lays them out.

    positions=True puts each pixel's frequency row in the middle channel instead (-1 at a tile's row 0,
    +1 at its last row; CoordConv). A CNN is built to be blind to where a pattern sits, and its global
    average pool discards the rest, yet here the row is the frequency: 2 Hz power is not 6 Hz power.
    Without it a network from scratch must learn position from the zero padding at the borders."""

    def __init__(self, kinds: int, positions: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.kinds = kinds
        self.positions = positions

    def call(self, x):
        columns = [ops.concatenate([x[..., 4 * k + i:4 * k + i + 1] for i in range(4)], axis=1) for k in range(self.kinds)]
        image = ops.concatenate(columns, axis=2) if self.kinds > 1 else columns[0]
        if not self.positions:
            return ops.concatenate([image, image, image], axis=-1)
        height = ops.shape(x)[1]
        row = ops.linspace(-1.0, 1.0, height)
        ramp = ops.tile(ops.reshape(ops.cast(row, image.dtype), (1, height, 1, 1)), (1, 4, 1, 1))
        ramp = ops.broadcast_to(ramp, ops.shape(image))
        return ops.concatenate([image, ramp, image], axis=-1)

    def compute_output_shape(self, shape):
        return (shape[0], None if shape[1] is None else 4 * shape[1], None if shape[2] is None else self.kinds * shape[2], 3)

    def get_config(self):
        return {**super().get_config(), "kinds": self.kinds, "positions": self.positions}


PACKAGE_DROP_CONNECT = 0.2  # both EfficientNet packages' stochastic depth at the last block


def build_model(backbone: str, tile, kinds: int, source: str = "efficientnet", weights=None, dropout: float = 0.2,
                bn_momentum: float | None = None, drop_connect: float = PACKAGE_DROP_CONNECT, positions: bool = False,
                zero_residual: bool = False, inputs=None, tiles=None):
    """The classifier on (batch, H, W, 4*kinds) tiles; outputs class probabilities in float32.

    `bn_momentum` replaces the backbone's batch-norm momentum (0.99): short runs from scratch need
    faster-moving statistics, or validation sees running means still close to their initial values.
    `drop_connect` rescales the backbone's stochastic depth (0.2 at its deepest block; 0: off).
    `positions` gives the backbone each pixel's frequency row (TileMontage).
    `inputs` and `tiles`: a representation's own model inputs and the tiles its stem makes of them (default: the
    tiles are the input)."""
    height, width = tile
    if inputs is None:
        inputs = tiles = keras.Input((height, width, 4 * kinds), name="tiles")
    image = TileMontage(kinds, positions=positions, name="montage")(tiles)
    return image_classifier(inputs, image, backbone, (4 * height, kinds * width, 3), source=source, weights=weights,
                            dropout=dropout, bn_momentum=bn_momentum, drop_connect=drop_connect, zero_residual=zero_residual)


def image_classifier(inputs, image, backbone: str, shape, source: str = "efficientnet", weights=None, dropout: float = 0.2,
                     bn_momentum: float | None = None, drop_connect: float = PACKAGE_DROP_CONNECT, zero_residual: bool = False):
    """An image backbone on `image` (a (batch, h, w, 3) tensor of shape `shape` made from `inputs`), pooled, with
    dropout and a float32 softmax over the six classes: the head every image representation shares."""
    net = create_backbone(backbone, shape, source=source, weights=weights)
    if bn_momentum is not None:
        for layer in net.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = bn_momentum
    for layer in net.layers:  # the per-block stochastic-depth dropouts grow linearly to 0.2 at the last block
        if isinstance(layer, layers.Dropout) and layer.name.startswith("block") and layer.name.endswith("drop"):
            layer.rate = layer.rate * drop_connect / PACKAGE_DROP_CONNECT
    if zero_residual and zero_residual_scales(net) == 0:
        import warnings

        warnings.warn(f"backbone.zero_residual: {backbone} has no residual blocks named blockNx_add with a "
                      "blockNx_project_bn, so nothing was changed", stacklevel=2)
    features = net(image)
    pooled = layers.GlobalAveragePooling2D(name="pool")(features)
    pooled = layers.Dropout(dropout, name="dropout")(pooled)
    outputs = layers.Dense(len(CLASSES), activation="softmax", dtype="float32", name="probabilities")(pooled)
    return keras.Model(inputs, outputs, name=f"hms_{backbone}")


def zero_residual_scales(net) -> int:
    """Set the batch-norm scale (gamma) that ends each residual block's branch to 0, so that every such block
    starts as the identity (Goyal et al. 2017): a deep network from scratch then trains first as a shallow
    one. Returns the number of blocks changed."""
    names = {layer.name for layer in net.layers}
    changed = 0
    for name in sorted(names):
        if name.endswith("_add") and f"{name[:-4]}_project_bn" in names:
            norm = net.get_layer(f"{name[:-4]}_project_bn")
            norm.gamma.assign(np.zeros(norm.gamma.shape, norm.gamma.dtype))
            changed += 1
    return changed


FORGET_WITHIN_EPOCH = 0.01  # weight the running statistics' initial values may keep after one epoch
MIN_BN_MOMENTUM = 0.9       # an average over about 10 batches at least: short epochs end on a few samples
MAX_BN_MOMENTUM = 0.99      # the backbones' own momentum: long runs keep it


def auto_bn_momentum(steps_per_epoch: int) -> float:
    """Batch-norm momentum for a run of `steps_per_epoch` optimiser steps per epoch.

    A running mean with momentum m keeps m**steps of its initial value: at the backbones' 0.99 a
    30-step epoch keeps 74% of it, so validation (and a short run's predictions) normalise with
    statistics close to mean 0, variance 1 instead of the data's (CV KL 1.42, worse than the prior,
    where 0.9 gives 0.74 on the same folds). m**steps_per_epoch = 0.01 makes the statistics forget
    their start within one epoch; it is kept within [0.9, 0.99] so that the average spans about ten
    batches or more (an epoch of 2 steps would otherwise end on the statistics of its last, partial
    batch), and Kaggle-sized epochs (over 458 steps) keep the backbones' 0.99."""
    return float(min(MAX_BN_MOMENTUM, max(MIN_BN_MOMENTUM, FORGET_WITHIN_EPOCH ** (1 / max(1, steps_per_epoch)))))


def resolved_recipe(backbone, steps_per_epoch: int | None) -> dict:
    """`bn_momentum`, `drop_connect` and `positions` of a backbone config with `auto` resolved for the run.

    drop_connect auto: stochastic depth is a regulariser the packages tuned for long ImageNet runs;
    from scratch on a short run it slows learning (CV KL 0.90 -> 0.74 on the embedded default), so it
    is off from scratch and the packages' 0.2 when training starts from pretrained weights.

    positions auto: a network from scratch gets the frequency-row channel (see TileMontage); pretrained
    weights expect the notebook's grey image in all three channels, so they keep it. A config written
    before the key existed (an older run's) had no such channel, and reloading its models keeps it so.

    zero_residual auto: from scratch every residual block starts as the identity (`zero_residual_scales`):
    B2, 8 epochs on the embedded default, folds 0 and 1: KL 0.658 and 0.716 without, 0.645 and 0.550 with;
    pretrained blocks keep their trained scales. Older configs lack the key: off, as they were trained."""
    momentum = backbone.get("bn_momentum", "auto")
    if momentum == "auto":
        momentum = None if steps_per_epoch is None else auto_bn_momentum(steps_per_epoch)
    drop = backbone.get("drop_connect", "auto")
    if drop == "auto":
        drop = 0.0 if backbone.weights is None else PACKAGE_DROP_CONNECT
    def from_scratch_only(key):  # auto: on when training from scratch; absent (an older run's config): off
        value = backbone.get(key, False)
        return backbone.weights is None if value == "auto" else bool(value)

    return {"bn_momentum": None if momentum is None else float(momentum), "drop_connect": float(drop),
            "positions": from_scratch_only("positions"), "zero_residual": from_scratch_only("zero_residual")}


def batch_norm_layers(model) -> list:
    """Every BatchNormalization layer of a model, nested backbones included."""
    found, stack = [], [model]
    while stack:
        layer = stack.pop()
        if isinstance(layer, layers.BatchNormalization):
            found.append(layer)
        stack.extend(getattr(layer, "layers", []))
    return found


_TRAINING_FORWARD = weakref.WeakKeyDictionary()  # model -> its forward pass in training mode, compiled once


def _training_forward(model):
    """`model(x, training=True)`, compiled once per model on the TensorFlow backend (eagerly, layer by layer,
    it costs about 1 s per batch for B2 on a CPU). Traced while every batch-norm momentum is 0, as
    `recalibrate_batch_norm` calls it: a traced graph keeps the momentum it saw."""
    if model not in _TRAINING_FORWARD:
        forward = lambda x: model(x, training=True)  # noqa: E731
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            forward = tf.function(forward, reduce_retracing=True)
        _TRAINING_FORWARD[model] = forward
    return _TRAINING_FORWARD[model]


def recalibrate_batch_norm(model, batches) -> int:
    """Set every batch-norm layer's moving mean and variance to the average of its batch statistics over
    `batches` (x, y pairs), with the model's final weights; returns the number of batches used.

    During training the moving averages follow weights that keep changing: after a short run, or a last
    epoch at a high rate, they describe earlier weights, and predictions normalise with the wrong
    statistics (a 3-epoch B0 fold: KL 1.70 as trained, 1.16 recalibrated; B2 at 8 epochs 0.93 -> 0.88,
    single view). Each batch runs with momentum 0, so a layer's moving values become that batch's own
    statistics; they are summed here and their mean is set at the end (as SWA's bn_update)."""
    norms = batch_norm_layers(model)
    saved = [layer.momentum for layer in norms]
    # Per channel: the sum of its finite batch statistics and how many there were. In float16 a batch whose
    # activations overflow gives a channel inf/NaN statistics; averaged in, they made the run's final moving mean and
    # variance NaN, and every prediction of the saved model NaN (seen: 2 of 32 channels of a raw-EEG CNN's first
    # batch norm). Such a batch is left out of that channel's average.
    sums = [[np.zeros(layer.moving_mean.shape), np.zeros(layer.moving_variance.shape), np.zeros(layer.moving_mean.shape)]
            for layer in norms]
    used = 0
    try:
        for layer in norms:
            layer.momentum = 0.0
        forward = _training_forward(model)
        for k in range(len(batches)):
            x, _ = batches[k]
            forward(x)
            for total, layer in zip(sums, norms):
                mean = keras.ops.convert_to_numpy(layer.moving_mean).astype(np.float64)
                variance = keras.ops.convert_to_numpy(layer.moving_variance).astype(np.float64)
                finite = np.isfinite(mean) & np.isfinite(variance)
                total[0] += np.where(finite, mean, 0.0)
                total[1] += np.where(finite, variance, 0.0)
                total[2] += finite
            used += 1
        if used:
            for (mean, variance, count), layer in zip(sums, norms):
                seen = count > 0
                # A channel with no finite batch statistics at all normalises nothing: mean 0, variance 1.
                mean = np.where(seen, mean / np.maximum(count, 1), 0.0)
                variance = np.where(seen, variance / np.maximum(count, 1), 1.0)
                layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
                layer.moving_variance.assign(variance.astype(layer.moving_variance.dtype))
    finally:
        for layer, momentum in zip(norms, saved):
            layer.momentum = momentum
    return used
