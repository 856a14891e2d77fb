"""The representation contract and its registry: what a model reads, and all the rest of hms needs to know of it.

A representation is one class in one module, registered by name (`input.mix`, e.g. `input=eeg1d`):

    @register
    class MyInput(Representation):
        name = "my_input"
        family = "image"                      # the backbones that take it: image (EfficientNets) or signal (1D)
        def parts(self): ...                  # the arrays it reads per labelled window (`Part`)
        def build_model(self, weights, recipe): ...   # its stem, if any, and the backbone

plus `conf/input/my_input.yaml` (`mix: my_input`). Everything else has a default here: the augmentations and
test-time views of its family, the feature baseline's pooled statistics, the picture its MLflow run shows.
Commands, CV, inference, baselines, caches and plots call these methods; none of them tests a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ClassVar

import numpy as np

from ..schema import ConfigError

FAMILIES = {"image": ("efficientnet", "keras"), "signal": ("eeg1d",)}  # representation family -> backbone sources


@dataclass(frozen=True)
class Part:
    """One array a representation reads per labelled window, cut from one kind of data file.

    name: the cache's name for it. stored: the data files it comes from, "kaggle" (spectrograms) or "eeg".
    tile: a feature kind the tile cache can hold finished (`hms.features.cache.KINDS`); then `data.cache` decides
    whether it is stored finished or made per batch. Otherwise it is made per batch from the per-file cache:
    `make(files, file_ids, offsets)` returns an array-like of the windows (`hms.features.files.WindowTiles` is one)."""

    name: str
    stored: str
    tile: bool = False
    make: Callable | None = None


class Representation:
    """An input representation bound to a run's config (`cfg`). Subclasses set `name` and `family` and
    define `parts`; the defaults below are those of the tile family, overridden where a representation differs."""

    name: ClassVar[str]
    family: ClassVar[str] = "image"
    # Keys of the `augmentation` group that apply; any other set above 0 is refused before a run is recorded.
    augmentations: ClassVar[tuple] = ("time_flip", "hemisphere", "coarse_dropout", "mixup")

    def __init__(self, cfg):
        self.cfg = cfg

    # --- what it reads ---------------------------------------------------------------------------------
    def parts(self) -> list[Part]:
        raise NotImplementedError

    def check(self) -> None:
        """Raise ConfigError naming a key of the `input` group this representation cannot use."""

    # --- augmentation and test-time views ----------------------------------------------------------------
    def augmentation(self, seed: int | None = None):
        """The per-sample augmentation (called as `augment(image=x)["image"]`), or None."""
        from ..augment import build_augmentation

        try:
            return build_augmentation(self.cfg.augmentation, seed)
        except ValueError as error:
            raise ConfigError(str(error)) from None

    def views(self) -> list:
        """Test-time views of a batch, averaged at prediction."""
        from ..augment import tta_views

        return tta_views(self.cfg.augmentation, ndim=4)

    # --- baseline, model, picture ------------------------------------------------------------------------
    def baseline_features(self, sources, rows: np.ndarray) -> np.ndarray:
        """What the run's feature baseline fits on: per part, pooled statistics of the rows' arrays."""
        from ..features.pooling import pooled_features

        return pooled_features(sources, rows)

    def build_model(self, weights=None, recipe: dict | None = None):
        """The classifier (a float32 softmax over the six classes) on this representation's batches."""
        raise NotImplementedError

    def picture(self, model, x) -> np.ndarray | None:
        """One input as the backbone sees it (the run's `plots/input_montage.png`): the output of the model's layer
        named `montage` for the first item of batch input `x`; None for a model without one."""
        if "montage" not in {layer.name for layer in model.layers}:
            return None
        import keras

        upto = keras.Model(model.inputs if len(model.inputs) > 1 else model.inputs[0], model.get_layer("montage").output)
        first = tuple(part[:1] for part in x) if isinstance(x, (tuple, list)) else x[:1]
        return np.asarray(keras.ops.convert_to_numpy(upto(first, training=False)))[0]

    def check_augmentation(self) -> None:
        """ConfigError for an augmentation that is switched on but does not apply to this representation."""
        aug = self.cfg.augmentation
        extra = [k for k in ("time_flip", "hemisphere", "coarse_dropout", "time_shift", "channel_dropout", "amplitude", "mixup")
                 if aug.get(k, 0) > 0 and k not in self.augmentations]
        if extra:
            raise ConfigError(f"augmentation.{extra[0]}={aug[extra[0]]} does not apply to input.mix={self.name} (it takes "
                              f"{', '.join(self.augmentations)}; time_shift, channel_dropout and amplitude are for raw-EEG "
                              "signals, coarse_dropout for tiles)")


_REGISTRY: dict[str, type[Representation]] = {}


def register(cls: type[Representation]) -> type[Representation]:
    """Class decorator: make a representation available as `input.mix=<cls.name>` (a second one of that name
    replaces the first, so a test or a user's module can redefine one)."""
    if cls.family not in FAMILIES:
        raise ValueError(f"representation {cls.name}: family must be one of {sorted(FAMILIES)}, got {cls.family!r}")
    _REGISTRY[cls.name] = cls
    return cls


def list_representations(family: str | None = None) -> list[str]:
    """Names of the registered representations (of one family, if given)."""
    return sorted(name for name, cls in _REGISTRY.items() if family in (None, cls.family))


def representation_class(name: str) -> type[Representation]:
    """The registered class of `name`; ConfigError listing the registered ones if there is none."""
    if name not in _REGISTRY:
        raise ConfigError(f"input.mix={name!r} is not a registered representation; registered: {', '.join(list_representations())}")
    return _REGISTRY[name]


def family_of(source: str) -> str | None:
    """The representation family a backbone source takes."""
    return next((family for family, sources in FAMILIES.items() if source in sources), None)
