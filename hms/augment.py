"""Augmentation of tile stacks with albumentations, configured by the `augmentation` group."""

from __future__ import annotations

import numpy as np

# Channels are kinds x regions (LL, RL, LP, RP): swapping hemispheres maps LL<->RL and LP<->RP in every kind.
_SWAP = np.array([1, 0, 3, 2])


def swap_hemispheres(image: np.ndarray, **_) -> np.ndarray:
    """(..., 4k) tiles (one image or a batch) with left and right exchanged in each kind's regions."""
    kinds = image.shape[-1] // 4
    return image[..., np.concatenate([_SWAP + 4 * k for k in range(kinds)])]


def tta_views(cfg) -> list:
    """Test-time views of a (batch, H, W, 4k) array: the identity, plus (augmentation.tta) every combination of
    the label-preserving flips training used (time flip, hemisphere swap); predictions are averaged over them."""
    flips = []
    if cfg.get("tta", False):
        if cfg.time_flip > 0:
            flips.append(lambda x: x[:, :, ::-1, :])
        if cfg.hemisphere > 0:
            flips.append(swap_hemispheres)
    views = [lambda x: x]
    for flip in flips:
        views += [lambda x, view=view, flip=flip: flip(view(x)) for view in views]
    return views


def build_augmentation(cfg, seed: int | None = None):
    """An albumentations pipeline for (H, W, C) float32 tiles, or None when nothing is enabled.

    time_flip: reverse the time axis (the notebook's horizontal flip); hemisphere: swap left and right;
    coarse_dropout: zero up to 8 rectangles, as the notebook does.
    """
    import albumentations as A

    transforms = []
    if cfg.time_flip > 0:
        transforms.append(A.HorizontalFlip(p=cfg.time_flip))
    if cfg.hemisphere > 0:
        transforms.append(A.Lambda(image=swap_hemispheres, p=cfg.hemisphere, name="swap_hemispheres"))
    if cfg.coarse_dropout > 0:
        transforms.append(A.CoarseDropout(num_holes_range=(1, 8), hole_height_range=(0.05, 0.25),
                                          hole_width_range=(0.03, 0.125), fill=0, p=cfg.coarse_dropout))
    return A.Compose(transforms, seed=seed) if transforms else None
