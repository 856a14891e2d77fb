"""Input representations behind one seam: a registry, as the backbones have one (`hms.models.backbones`).

`representation_for(cfg)` gives the entry of `cfg.input.mix` bound to the run's config; commands, CV,
inference, baselines, caches and plots ask it what to read, how to augment, what the baseline pools, which
model to build and what picture to show. A new representation is one module (see `hms.representations.base`)
and one `conf/input/NAME.yaml`.
"""

from .base import FAMILIES, Part, Representation, family_of, list_representations, register, representation_class
from . import tiles, eeg1d, eeg_layer, eeg_image  # noqa: F401,E402 - the built-in entries register themselves


def representation_for(cfg) -> Representation:
    """The registered representation of `cfg.input.mix`, bound to `cfg`."""
    return representation_class(cfg.input.mix)(cfg)


def model_for(cfg, kinds: int | None = None, weights=None, steps_per_epoch: int | None = None):
    """The classifier of a run config: its representation's stem and model with the backbone's recipe (`weights`:
    the backbone's initial weights; `steps_per_epoch`: the training run's, to resolve `bn_momentum: auto`; None
    when only predicting). `kinds` is what older callers passed; the representation knows its parts."""
    from ..models.montage import resolved_recipe

    return representation_for(cfg).build_model(weights, resolved_recipe(cfg.backbone, steps_per_epoch))


__all__ = ["FAMILIES", "Part", "Representation", "family_of", "list_representations", "model_for", "register",
           "representation_class", "representation_for"]
