"""Raw-EEG input (input=eeg1d): the 16 chain pairs of a window, band-passed, downsampled, clipped and scaled; the
signal augmentations and batch mixup."""

import numpy as np
import pytest
from omegaconf import OmegaConf

from hms.augment import SHIFT_FRACTION, SignalAugment, tta_views
from hms.batches import TileBatches
from hms.constants import EEG_COLUMNS
from hms.dataset import load_train, read_eeg
from hms.features.cache import FeatureOptions
from hms.features.files import build_window_caches
from hms.features.signals import SignalOptions, signal_windows
from hms.config import compose
from hms.inputs import train_items
from hms.representations import representation_for

# The seed's four chains written out here (not read from hms): LL, RL, LP, RP, four pairs each.
CHAINS = [("Fp1", "F7"), ("F7", "T3"), ("T3", "T5"), ("T5", "O1"),
          ("Fp2", "F8"), ("F8", "T4"), ("T4", "T6"), ("T6", "O2"),
          ("Fp1", "F3"), ("F3", "C3"), ("C3", "P3"), ("P3", "O1"),
          ("Fp2", "F4"), ("F4", "C4"), ("C4", "P4"), ("P4", "O2")]
RATE = 200


def window_with(electrode: str, signal: np.ndarray) -> np.ndarray:
    window = np.zeros((1, 10_000, len(EEG_COLUMNS)), np.float32)
    window[0, :, EEG_COLUMNS.index(electrode)] = signal
    return window


def test_pairs_band_pass_downsampling_clip_and_scale():
    t = np.arange(10_000) / RATE
    options = SignalOptions()  # 50 Hz, 0.5-20 Hz, clip 1024, scale 32
    # A 5 Hz sine on F7 shows in the two pairs that hold F7 (Fp1-F7 with a minus sign, F7-T3), nowhere else.
    x = signal_windows(window_with("F7", 100 * np.sin(2 * np.pi * 5 * t)), options)[0]
    assert x.shape == (2500, 16) and x.dtype == np.float32
    holding = [i for i, pair in enumerate(CHAINS) if "F7" in pair]
    assert holding == [0, 1]
    others = [i for i in range(16) if i not in holding]
    assert np.abs(x[:, others]).max() < 1e-6
    middle = slice(250, 2250)  # away from the filter's edges
    expected = 100 * np.sin(2 * np.pi * 5 * t[::4]) / 32  # in the pass band: unchanged, every 4th sample, / scale
    np.testing.assert_allclose(x[middle, 1], expected[middle], atol=0.05 * 100 / 32)
    np.testing.assert_allclose(x[middle, 0], -expected[middle], atol=0.05 * 100 / 32)
    # Outside the band (0.1 Hz drift, 45 Hz) almost nothing is left.
    for hz in (0.1, 45.0):
        y = signal_windows(window_with("F7", 100 * np.sin(2 * np.pi * hz * t)), options)[0]
        assert np.abs(y[middle, 1]).max() < 0.1 * 100 / 32, hz
    # Clipped at +-1024 microvolts before scaling.
    big = signal_windows(window_with("F7", 5000 * np.sin(2 * np.pi * 5 * t)), options)[0]
    assert np.abs(big).max() == pytest.approx(1024 / 32)
    # NaN is filled as in the spectrogram path (the pair's mean), so the signal stays finite.
    gappy = 100 * np.sin(2 * np.pi * 5 * t)
    gappy[3000:3400] = np.nan
    assert np.isfinite(signal_windows(window_with("F7", gappy), options)).all()
    with pytest.raises(ValueError, match="aliases"):
        SignalOptions(rate=20, high=20.0)


def test_signals_from_the_per_file_cache_are_those_of_the_parquet_window(synthetic_root, tmp_path, monkeypatch):
    samples, labelled = load_train(synthetic_root)
    items = train_items(samples, labelled, "random")
    items = items[items.eeg_id.isin(samples.eeg_id.iloc[:3])].reset_index(drop=True)
    options = FeatureOptions(cache_dir=str(tmp_path), workers=1, progress=False)
    signal = representation_for(compose(["input=eeg1d", "backbone=eeg1d_cnn"])).parts()  # the eeg1d entry's part
    signals = build_window_caches(synthetic_root, "train", signal, items, options)["eeg1d"].features
    assert signals.shape == (len(items), 2500, 16)
    rows = np.arange(len(items))[::-1]
    got = signals[rows]
    for k, row in enumerate(rows):
        item = items.iloc[row]
        eeg = read_eeg(synthetic_root / "train_eegs" / f"{int(item.eeg_id)}.parquet")
        first = int(round(item.eeg_offset * RATE))
        window = np.asarray(eeg[first:first + 10_000], np.float32)[None]
        np.testing.assert_allclose(got[k], signal_windows(window)[0], atol=1e-5)

    # Read again: served from memory (no file read), the same values; the memo holds at most its budget.
    reads = []
    read = signals.files.read
    monkeypatch.setattr(signals.files, "read", lambda *a: reads.append(a) or read(*a))
    np.testing.assert_array_equal(signals[rows], got)
    assert reads == []
    item_bytes = 2500 * 16 * 4
    for budget, kept in ((0, 0), (2 * item_bytes, 2)):
        fresh = signals.with_memo(budget)
        reads.clear()
        np.testing.assert_array_equal(fresh[rows], got)
        np.testing.assert_array_equal(fresh[rows], got)
        assert len(reads) == 2 * len(rows) - kept  # the second pass reads all but the kept windows again


def batch(n=8, samples=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, samples, 16)).astype(np.float32)


def augment(**probabilities):
    cfg = OmegaConf.create({"time_flip": 0.0, "hemisphere": 0.0, "time_shift": 0.0, "channel_dropout": 0.0, "amplitude": 0.0,
                            **probabilities})
    return SignalAugment(cfg, seed=0)


def test_each_signal_augmentation_does_what_it_says():
    x = batch(1)[0]
    assert np.array_equal(augment(time_flip=1.0)(image=x)["image"], x[::-1])
    swapped = augment(hemisphere=1.0)(image=x)["image"]
    for region, other in ((0, 1), (1, 0), (2, 3), (3, 2)):  # LL<->RL, LP<->RP: whole chains of 4 pairs move
        assert np.array_equal(swapped[:, 4 * region:4 * region + 4], x[:, 4 * other:4 * other + 4])
    shifter = augment(time_shift=1.0)
    for _ in range(5):
        moved = shifter(image=x)["image"]
        shift = next(s for s in range(-20, 21) if np.array_equal(moved[max(s, 0):len(x) + min(s, 0)], x[max(-s, 0):len(x) - max(s, 0)]))
        assert abs(shift) <= SHIFT_FRACTION * len(x)
        assert not moved[:shift].any() if shift > 0 else not moved[len(x) + shift:].any()
    dropper = augment(channel_dropout=0.25)
    outs = [dropper(image=x)["image"] for _ in range(200)]
    zeroed = np.array([[not out[:, p].any() for p in range(16)] for out in outs])
    assert 0.18 < zeroed.mean() < 0.32  # each pair with probability 0.25
    assert all(np.array_equal(out[:, p], x[:, p]) or not out[:, p].any() for out in outs for p in range(16))  # whole pairs
    factors = []
    scaler = augment(amplitude=1.0)
    for _ in range(50):
        scaled = scaler(image=x)["image"]
        factor = scaled[0, 0] / x[0, 0]
        np.testing.assert_allclose(scaled, factor * x, rtol=1e-5)
        factors.append(factor)
    assert 0.8 - 1e-6 <= min(factors) < 0.9 and 1.15 < max(factors) <= 1.25 + 1e-6
    assert np.array_equal(augment()(image=x)["image"], x)


def test_test_time_views_of_signals_flip_time_and_swap_chains():
    x = batch(2)
    views = tta_views(OmegaConf.create({"tta": True, "time_flip": 0.5, "hemisphere": 0.5}), ndim=3)
    assert len(views) == 4
    assert np.array_equal(views[1](x), x[:, ::-1])
    assert np.array_equal(views[2](x)[..., 0:4], x[..., 4:8]) and np.array_equal(views[2](x)[..., 8:12], x[..., 12:16])


def test_mixup_mixes_inputs_and_vote_distributions_with_the_same_weights():
    x = batch(16, samples=50)
    rng = np.random.default_rng(1)
    y = rng.dirichlet(np.ones(6), 16).astype(np.float32)
    plain = TileBatches([x], np.arange(16), y, batch_size=16)
    mixed = TileBatches([x], np.arange(16), y, batch_size=16, mixup=0.4)
    (x0, y0), (x1, y1) = plain[0], mixed[0]
    assert not np.allclose(x0, x1)
    np.testing.assert_allclose(y1.sum(axis=1), 1, atol=1e-5)
    for i in range(16):
        # Each mixed input is w * its own + (1 - w) * one partner's: find the partner and w from the inputs alone.
        fits = []
        for j in range(16):
            d = x0[i] - x0[j]
            w = 1.0 if not d.any() else float(((x1[i] - x0[j]) * d).sum() / (d * d).sum())
            if np.allclose(x1[i], w * x0[i] + (1 - w) * x0[j], atol=1e-4):
                fits.append((j, w))
        assert fits, i
        j, w = fits[0]
        assert 0 <= w <= 1
        np.testing.assert_allclose(y1[i], w * y0[i] + (1 - w) * y0[j], atol=1e-5)
