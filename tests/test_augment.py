import numpy as np
from omegaconf import OmegaConf

from hms.augment import build_augmentation, swap_hemispheres, tta_views


def tiles():
    x = np.zeros((4, 6, 8), np.float32)
    for c in range(8):
        x[..., c] = c
    x[:, 0, :] += 100  # mark the first time column
    return x


def test_hemisphere_swap_exchanges_left_and_right_in_both_kinds():
    swapped = swap_hemispheres(tiles())
    assert swapped[0, 1, :].tolist() == [1, 0, 3, 2, 5, 4, 7, 6]  # LL<->RL, LP<->RP, in Kaggle and EEG tiles


def test_time_flip_reverses_the_time_axis():
    augment = build_augmentation(OmegaConf.create({"time_flip": 1.0, "hemisphere": 0.0, "coarse_dropout": 0.0}), seed=0)
    out = augment(image=tiles())["image"]
    assert (out[:, -1, :] >= 100).all() and (out[:, 0, :] < 100).all()


def test_configured_probabilities_and_none():
    assert build_augmentation(OmegaConf.create({"time_flip": 0.0, "hemisphere": 0.0, "coarse_dropout": 0.0})) is None
    augment = build_augmentation(OmegaConf.create({"time_flip": 0.0, "hemisphere": 0.5, "coarse_dropout": 0.0}), seed=1)
    swapped = sum(augment(image=tiles())["image"][0, 1, 0] == 1 for _ in range(200))
    assert 60 < swapped < 140


def test_coarse_dropout_zeroes_patches_in_every_channel():
    augment = build_augmentation(OmegaConf.create({"time_flip": 0.0, "hemisphere": 0.0, "coarse_dropout": 1.0}), seed=2)
    x = np.ones((64, 128, 8), np.float32)
    out = augment(image=x)["image"]
    zero = out == 0
    assert zero.any() and (zero.all(axis=-1) == zero.any(axis=-1)).all()


def test_test_time_views_are_every_combination_of_the_enabled_flips():
    batch = tiles()[None]
    both = tta_views(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.5, "coarse_dropout": 0.0, "tta": True}))
    outs = [view(batch) for view in both]
    assert len(outs) == 4 and np.array_equal(outs[0], batch)
    assert np.array_equal(outs[1], batch[:, :, ::-1]) and np.array_equal(outs[2][0], swap_hemispheres(batch[0]))
    assert np.array_equal(outs[3][0], swap_hemispheres(batch[0, :, ::-1]))
    assert len(tta_views(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.0, "coarse_dropout": 0.0, "tta": True}))) == 2
    assert len(tta_views(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.5, "coarse_dropout": 0.0, "tta": False}))) == 1
    assert len(tta_views(OmegaConf.create({"time_flip": 0.5, "hemisphere": 0.5, "coarse_dropout": 0.0}))) == 1  # older runs' configs
