"""Augmentation of tile stacks with albumentations, configured by the `augmentation` group."""

from __future__ import annotations

import numpy as np

# Channels are kinds x regions (LL, RL, LP, RP): swapping hemispheres maps LL<->RL and LP<->RP in every kind.
_SWAP = np.array([1, 0, 3, 2])


# Raw-EEG signals hold 16 pairs, region by region (LL0-3, RL0-3, LP0-3, RP0-3): a swap moves whole regions.
_SWAP_PAIRS = np.concatenate([4 * r + np.arange(4) for r in _SWAP])


def swap_hemispheres(image: np.ndarray, **_) -> np.ndarray:
    """(..., 4k) tiles (one image or a batch) with left and right exchanged in each kind's regions."""
    kinds = image.shape[-1] // 4
    return image[..., np.concatenate([_SWAP + 4 * k for k in range(kinds)])]


def swap_pairs(signal: np.ndarray) -> np.ndarray:
    """(..., 16) raw-EEG pairs (one window or a batch) with the left and right chains exchanged."""
    return signal[..., _SWAP_PAIRS]


def tta_views(cfg, ndim: int = 4) -> list:
    """Test-time views of a (batch, H, W, 4k) array of tiles (ndim 4) or a (batch, samples, 16) array of signals
    (ndim 3): the identity, plus (augmentation.tta) every combination of the label-preserving flips training used
    (time flip, hemisphere swap); predictions are averaged over them."""
    flips = []
    if cfg.get("tta", False):
        if cfg.time_flip > 0:
            flips.append((lambda x: x[:, :, ::-1, :]) if ndim == 4 else (lambda x: x[:, ::-1, :]))
        if cfg.hemisphere > 0:
            flips.append(swap_hemispheres if ndim == 4 else swap_pairs)
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

    signal_only = [k for k in ("time_shift", "channel_dropout", "amplitude") if cfg.get(k, 0) > 0]
    if signal_only:
        raise ValueError(f"augmentation.{signal_only[0]}={cfg[signal_only[0]]} applies to raw-EEG signals (input=eeg1d), "
                         "not to tiles")
    transforms = []
    if cfg.time_flip > 0:
        transforms.append(A.HorizontalFlip(p=cfg.time_flip))
    if cfg.hemisphere > 0:
        transforms.append(A.Lambda(image=swap_hemispheres, p=cfg.hemisphere, name="swap_hemispheres"))
    if cfg.coarse_dropout > 0:
        transforms.append(A.CoarseDropout(num_holes_range=(1, 8), hole_height_range=(0.05, 0.25),
                                          hole_width_range=(0.03, 0.125), fill=0, p=cfg.coarse_dropout))
    return A.Compose(transforms, seed=seed) if transforms else None


SHIFT_FRACTION = 0.1  # augmentation.time_shift moves a window by up to this share of its length
AMPLITUDE_RANGE = (0.8, 1.25)  # augmentation.amplitude scales a window by a log-uniform factor in this range


class SignalAugment:
    """Augmentation of one (samples, 16) raw-EEG window, called like an albumentations pipeline
    (`augment(image=x)["image"]`), each transform with its own probability from the `augmentation` group:
    time_flip reverses time; hemisphere swaps the left and right chains; time_shift moves the window by up to
    a tenth of its length, filling with zeros; channel_dropout zeroes each pair with that probability;
    amplitude scales the window by a factor in [0.8, 1.25]."""

    def __init__(self, cfg, seed: int | None = None):
        self.cfg = cfg
        self.rng = np.random.default_rng(seed)

    def __call__(self, image: np.ndarray, **_) -> dict:
        x, cfg, rng = image, self.cfg, self.rng
        if cfg.time_flip > 0 and rng.random() < cfg.time_flip:
            x = x[::-1]
        if cfg.hemisphere > 0 and rng.random() < cfg.hemisphere:
            x = swap_pairs(x)
        if cfg.get("time_shift", 0) > 0 and rng.random() < cfg.time_shift:
            limit = max(1, int(SHIFT_FRACTION * len(x)))
            shift = int(rng.integers(-limit, limit + 1))
            moved = np.zeros_like(x)
            if shift >= 0:
                moved[shift:] = x[:len(x) - shift]
            else:
                moved[:shift] = x[-shift:]
            x = moved
        if cfg.get("channel_dropout", 0) > 0:
            keep = rng.random(x.shape[-1]) >= cfg.channel_dropout
            x = x * keep.astype(x.dtype)
        if cfg.get("amplitude", 0) > 0 and rng.random() < cfg.amplitude:
            low, high = np.log(AMPLITUDE_RANGE)
            x = x * np.float32(np.exp(rng.uniform(low, high)))
        return {"image": np.ascontiguousarray(x, dtype=np.float32)}


def build_signal_augmentation(cfg, seed: int | None = None):
    """`SignalAugment` for raw-EEG windows, or None when no signal transform is enabled (mixup works on whole
    batches: `TileBatches(mixup=...)`)."""
    keys = ("time_flip", "hemisphere", "time_shift", "channel_dropout", "amplitude")
    return SignalAugment(cfg, seed) if any(cfg.get(k, 0) > 0 for k in keys) else None


def augmentation_for(cfg, mix: str, seed: int | None = None):
    """The per-sample augmentation of a run's `augmentation` group for its input (`input.mix`)."""
    if mix == "eeg1d":
        return build_signal_augmentation(cfg, seed)
    try:
        return build_augmentation(cfg, seed)
    except ValueError as error:
        from .config import ConfigError

        raise ConfigError(str(error)) from None
