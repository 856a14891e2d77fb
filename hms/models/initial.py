"""Initial weights that a seed fixes on every Keras backend (`backbone.init=portable`).

Keras draws a layer's initial weights with the backend's own random generator, so one seed gives TensorFlow and JAX
different starting points, and two runs of one config on the two backends differ by what such draws move a fold by.
Here every weight whose initializer is random is drawn again with NumPy, from the initializer's own distribution
(its class and config: variance scaling in its three shapes, normal, uniform, truncated normal, orthogonal), seeded by
the run's seed and the variable's path. Deterministic initializers (zeros, ones, constants) are left as they are, and
so is what hms sets after building (zero residual scales). Dropout masks still come from the backend's generator.
"""

from __future__ import annotations

import math
import zlib

import numpy as np

TRUNCATION = 0.87962566103423978  # the standard deviation of a unit normal truncated at +-2 (Keras' constant)


def _truncated(rng: np.random.Generator, shape, stddev: float) -> np.ndarray:
    """A normal sample truncated at two standard deviations (redrawn beyond them), as Keras' truncated_normal."""
    out = rng.standard_normal(shape)
    outside = np.abs(out) > 2
    while outside.any():
        out[outside] = rng.standard_normal(int(outside.sum()))
        outside = np.abs(out) > 2
    return out * stddev


def draw(initializer, shape: tuple, rng: np.random.Generator) -> np.ndarray | None:
    """What `initializer(shape)` draws, from NumPy's `rng`; None for an initializer that is not random (or not known)."""
    from keras import initializers
    from keras.src.initializers.random_initializers import compute_fans

    if isinstance(initializer, initializers.VarianceScaling):  # Glorot, He and LeCun, normal and uniform
        it = initializer  # its attributes: the subclasses' configs hold only the seed
        fan_in, fan_out = compute_fans(shape, getattr(it, "input_axes", None), getattr(it, "output_axes", None))
        scale = it.scale / max(1.0, {"fan_in": fan_in, "fan_out": fan_out}.get(it.mode, (fan_in + fan_out) / 2.0))
        if it.distribution == "truncated_normal":
            return _truncated(rng, shape, math.sqrt(scale) / TRUNCATION)
        if it.distribution == "untruncated_normal":
            return rng.standard_normal(shape) * math.sqrt(scale)
        limit = math.sqrt(3.0 * scale)
        return rng.uniform(-limit, limit, shape)
    config = initializer.get_config()
    if isinstance(initializer, initializers.TruncatedNormal):
        return config["mean"] + _truncated(rng, shape, config["stddev"])
    if isinstance(initializer, initializers.RandomNormal):
        return config["mean"] + rng.standard_normal(shape) * config["stddev"]
    if isinstance(initializer, initializers.RandomUniform):
        return rng.uniform(config["minval"], config["maxval"], shape)
    if isinstance(initializer, initializers.Orthogonal) and len(shape) >= 2:
        rows, cols = int(np.prod(shape[:-1])), shape[-1]
        q, r = np.linalg.qr(rng.standard_normal((max(rows, cols), min(rows, cols))))
        q = q * np.sign(np.diag(r))
        if rows < cols:
            q = q.T
        return config["gain"] * q.reshape(shape)
    return None


def _variable(layer, name: str):
    """The variable an initializer attribute `<name>_initializer` makes: `layer.<name>` or `layer.<name>_kernel`."""
    import keras

    for attribute in (name, f"{name}_kernel", *(["kernel"] if name == "depthwise" else [])):  # DepthwiseConv2D: kernel
        value = getattr(layer, attribute, None)
        if isinstance(value, keras.Variable):
            return value
    return None


def portable_weights(model, seed: int) -> dict:
    """Draw again, with NumPy, every weight of `model` whose initializer is random (see the module). Returns counts:
    drawn, left (deterministic initializers), unknown (random by an initializer this does not know: the backend's
    draw is kept) with those variables' paths."""
    from keras import initializers

    counts = {"drawn": 0, "left": 0, "unknown": []}
    for layer in model._flatten_layers(include_self=False, recursive=True):
        for attribute, initializer in sorted(vars(layer).items()):
            if not attribute.endswith("_initializer") or not isinstance(initializer, initializers.Initializer):
                continue
            variable = _variable(layer, attribute[: -len("_initializer")])
            constant = isinstance(initializer, (initializers.Zeros, initializers.Ones, initializers.Constant, initializers.Identity))
            if variable is None:
                if not constant and layer.built and layer.weights:  # a random draw this cannot find the variable of
                    counts["unknown"].append(f"{layer.path}.{attribute}")
                continue
            rng = np.random.default_rng([seed, zlib.crc32(variable.path.encode())])
            value = draw(initializer, tuple(variable.shape), rng)
            if value is not None:
                variable.assign(value.astype(variable.dtype))
                counts["drawn"] += 1
            elif constant:
                counts["left"] += 1
            else:
                counts["unknown"].append(variable.path)
    return counts
