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


_SWAPS = {"tiles": swap_hemispheres, "signal": swap_pairs}  # by layout: (..., W, 4k) tiles or (..., T, 16) pairs


def _time_flip(x: np.ndarray) -> np.ndarray:
    return x[..., ::-1, :]  # tiles (..., H, W, C) and signals (..., T, 16) both keep time second to last


def _each(transforms):
    """One transform per input array (a representation with several inputs), or the transform itself for one."""
    if len(transforms) == 1:
        return transforms[0]
    return lambda x: tuple(transform(part) for transform, part in zip(transforms, x))


def flip_views(cfg, layouts=("tiles",)) -> list:
    """Test-time views of a batch whose inputs have `layouts` ("tiles": (batch, H, W, 4k); "signal": (batch, T, 16)):
    the identity, plus (augmentation.tta) every combination of the label-preserving flips training used (time flip,
    hemisphere swap), applied to every input alike; predictions are averaged over them."""
    flips = []
    if cfg.get("tta", False):
        if cfg.time_flip > 0:
            flips.append(_each([_time_flip for _ in layouts]))
        if cfg.hemisphere > 0:
            flips.append(_each([_SWAPS[layout] for layout in layouts]))
    views = [lambda x: x]
    for flip in flips:
        views += [lambda x, view=view, flip=flip: flip(view(x)) for view in views]
    return views


def tta_views(cfg, ndim: int = 4) -> list:
    """`flip_views` of one array of tiles (ndim 4: (batch, H, W, 4k)) or of raw-EEG signals (ndim 3: (batch, samples, 16))."""
    return flip_views(cfg, ("tiles",) if ndim == 4 else ("signal",))


class FlipAugment:
    """The time flip and hemisphere swap of one item whose inputs have `layouts` (as `flip_views`), each drawn once
    per item and applied to all its inputs alike; called like an albumentations pipeline (`augment(image=x)`)."""

    def __init__(self, cfg, layouts, seed: int | None = None):
        self.cfg, self.layouts = cfg, tuple(layouts)
        self.rng = np.random.default_rng(seed)
        self.flip = _each([_time_flip for _ in self.layouts])
        self.swap = _each([_SWAPS[layout] for layout in self.layouts])

    def __call__(self, image, **_) -> dict:
        x = image
        if self.cfg.time_flip > 0 and self.rng.random() < self.cfg.time_flip:
            x = self.flip(x)
        if self.cfg.hemisphere > 0 and self.rng.random() < self.cfg.hemisphere:
            x = self.swap(x)
        return {"image": x}


def reseeded(augment, seed):
    """A copy of an augmentation (an albumentations pipeline, or one of ours with an `rng`) drawing from `seed`. The
    batches of an epoch are built by several threads in any order: each batch augments with its own copy, seeded by
    the epoch and the batch, so a run draws the same augmentations whichever thread builds which batch."""
    import copy

    if hasattr(augment, "set_random_seed"):
        copied = copy.deepcopy(augment)
        copied.set_random_seed(seed)
        return copied
    copied = copy.copy(augment)
    copied.rng = np.random.default_rng(seed)
    return copied


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
