"""A registry of image backbones: `create_backbone(name, ...)` instead of if/else chains."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..backends import resolved_source

_REGISTRY: dict[tuple[str, str], Callable] = {}


def register(name: str, source: str):
    """Decorator: register a builder `fn(input_shape, weights) -> keras.Model` (no top) as (name, source)."""
    def wrap(fn):
        _REGISTRY[(name, source)] = fn
        return fn
    return wrap


def list_backbones(source: str | None = None) -> list[str]:
    """Names of the registered backbones (of one source, if given)."""
    return sorted({name for name, s in _REGISTRY if source in (None, s)})


def create_backbone(name: str, input_shape, source: str = "efficientnet", weights: str | None = None):
    """A headless backbone. `weights`: None, "imagenet" (a download; "noisy-student" too for the
    efficientnet source), or a local weights file (offline use, e.g. Kaggle notebooks)."""
    import keras

    backend = keras.backend.backend()
    source = resolved_source(source, backend)
    if source == "efficientnet" and backend != "tensorflow":
        raise ValueError(f"backbone.source=efficientnet: the efficientnet package needs TensorFlow, and Keras runs on "
                         f"{backend}; use backbone.source=keras (keras.applications' EfficientNets)")
    if (name, source) not in _REGISTRY:
        raise ValueError(f"unknown backbone {name!r} for source {source!r}; known: {', '.join(list_backbones(source))}")
    local = weights not in (None, "imagenet", "noisy-student")
    if local and not Path(weights).is_file():
        raise FileNotFoundError(f"backbone.weights={weights}: no such file")
    model = _REGISTRY[(name, source)](tuple(input_shape), None if local else weights)
    if local:
        try:
            model.load_weights(weights)
        except Exception as error:
            raise ValueError(f"backbone.weights={weights}: cannot be loaded into {name} ({source}): {error}") from error
    return model


def _register_efficientnets():
    for index in range(8):
        name = f"efficientnet_b{index}"

        def from_package(input_shape, weights, index=index):
            import efficientnet.tfkeras as efn

            return getattr(efn, f"EfficientNetB{index}")(include_top=False, weights=weights, input_shape=input_shape)

        def from_keras(input_shape, weights, index=index):
            import keras

            return getattr(keras.applications, f"EfficientNetB{index}")(include_top=False, weights=weights, input_shape=input_shape)

        register(name, "efficientnet")(from_package)
        register(name, "keras")(from_keras)


_register_efficientnets()
