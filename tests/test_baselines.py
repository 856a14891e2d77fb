"""The per-fold baselines: prior and softmax regression, fitted without the validation fold."""

import numpy as np
import pytest

from hms.baselines import fit_softmax, fold_baselines, learned, pooled_features, predict_softmax
from hms.metrics import kl_divergence


def soft_problem(n=300, d=12, folds=3, seed=0):
    """Features that carry the class (a linear signal plus noise), soft vote targets, and fold labels."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(d, 6))
    x = rng.normal(size=(n, d))
    logits = 2.0 * x @ w / np.sqrt(d)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    votes = np.array([rng.multinomial(3, row) for row in p], float)
    return x, votes / votes.sum(axis=1, keepdims=True), np.arange(n) % folds


def test_softmax_regression_matches_sklearn_on_hard_labels():
    from sklearn.linear_model import LogisticRegression

    x, y, _ = soft_problem()
    hard = y.argmax(axis=1)
    present = np.unique(hard)
    one_hot = (hard[:, None] == present[None, :]).astype(float)
    C = 0.5
    # sklearn minimises C * sum(log loss) + |W|^2 / 2, ours mean(log loss) + l2 / 2 * |W|^2: l2 = 1 / (C n).
    reference = LogisticRegression(C=C, max_iter=5000, tol=1e-10).fit(x, hard)
    ours = predict_softmax(fit_softmax(x, one_hot, l2=1 / (C * len(x)), max_iter=5000), x)
    assert ours == pytest.approx(reference.predict_proba(x), abs=2e-4)


def test_baselines_never_read_the_validation_fold_targets():
    x, y, folds = soft_problem()
    for fold in range(3):
        before = fold_baselines(x, y, folds, fold)
        scrambled = y.copy()
        val = folds == fold
        scrambled[val] = np.random.default_rng(fold).dirichlet(np.ones(6), val.sum())  # other "votes" for the fold
        after = fold_baselines(x, scrambled, folds, fold)
        for name in ("prior", "baseline"):
            assert np.array_equal(before[name], after[name]), name
        # ... while the training folds' targets do change them.
        changed = y.copy()
        changed[~val] = changed[~val][::-1]
        assert not np.allclose(fold_baselines(x, changed, folds, fold)["baseline"], before["baseline"])


def test_prior_is_the_training_folds_mean_and_the_feature_model_beats_it():
    x, y, folds = soft_problem()
    for fold in range(3):
        val = folds == fold
        got = fold_baselines(x, y, folds, fold)
        expected_prior = np.mean([y[i] for i in range(len(y)) if folds[i] != fold], axis=0)
        assert got["prior"].shape == (val.sum(), 6)
        assert np.allclose(got["prior"], expected_prior)
        assert np.allclose(got["baseline"].sum(axis=1), 1)
        prior_kl, baseline_kl = kl_divergence(y[val], got["prior"]), kl_divergence(y[val], got["baseline"])
        assert baseline_kl < 0.8 * prior_kl, (baseline_kl, prior_kl)


def test_pooled_features_are_band_means_and_stds_over_time():
    rng = np.random.default_rng(1)
    kaggle = rng.normal(size=(5, 32, 8, 4)).astype(np.float16)
    eeg = rng.normal(size=(5, 32, 8, 4)).astype(np.float16)
    rows = np.array([3, 0, 4])
    got = pooled_features([kaggle, eeg], rows, bands=4, chunk=2)
    assert got.shape == (3, 2 * 4 * 4 * 2)
    for i, row in enumerate(rows):
        expected = []
        for source in (kaggle, eeg):
            tile = source[row].astype(np.float64)
            bands = np.stack([tile[8 * b:8 * b + 8].mean(axis=0) for b in range(4)])  # (4 bands, time, channels)
            expected.append(np.concatenate([bands.mean(axis=1).ravel(), bands.std(axis=1).ravel()]))
        assert got[i] == pytest.approx(np.concatenate(expected), abs=1e-4)


def test_pooled_features_use_every_row_when_the_height_is_not_a_multiple_of_the_bands():
    rng = np.random.default_rng(2)
    source = rng.normal(size=(3, 20, 6, 4)).astype(np.float16)  # 20 rows into 8 bands: 4 bands of 3 rows, then 4 of 2
    got = pooled_features([source], np.arange(3), bands=8)
    sizes = [3] * 4 + [2] * 4
    starts = np.cumsum([0] + sizes)
    for i in range(3):
        tile = source[i].astype(np.float64)
        bands = np.stack([tile[starts[b]:starts[b + 1]].mean(axis=0) for b in range(8)])
        assert got[i] == pytest.approx(np.concatenate([bands.mean(axis=1).ravel(), bands.std(axis=1).ravel()]), abs=1e-4)


def test_learned_means_clearly_below_the_prior():
    assert learned(0.80, 1.0) and learned(0.90, 1.0)
    assert not learned(0.95, 1.0) and not learned(1.2, 1.0)
    assert learned(1.0, 1.2) and not learned(1.1, 1.2)  # 0.9 x 1.2 = 1.08


def test_feature_model_with_two_folds_has_no_inner_split_and_still_predicts():
    from hms.baselines import feature_model

    rng = np.random.default_rng(6)
    x = rng.normal(size=(60, 3))
    y = rng.dirichlet(np.ones(6), 60)
    p = feature_model(x, y, np.arange(60) % 2, 0)
    assert p.shape == (30, 6) and np.allclose(p.sum(axis=1), 1)


def test_feature_model_does_not_depend_on_each_features_units():
    # Standardised on training rows, the model sees the same inputs whatever scale and offset each pooled
    # statistic has (dB or power, any reference level): rescaling columns must not change its predictions.
    from hms.baselines import feature_model

    rng = np.random.default_rng(5)
    x = rng.normal(size=(150, 4))
    y = np.exp(np.stack([x[:, 0], -x[:, 0], x[:, 1], 0 * x[:, 0], x[:, 2], -x[:, 2]], axis=1))
    y /= y.sum(axis=1, keepdims=True)
    folds = np.arange(150) % 3
    scaled = x * np.array([10.0, 0.01, 3.0, 250.0]) + np.array([100.0, -7.0, 0.5, 1e4])
    assert np.allclose(feature_model(x, y, folds, 1), feature_model(scaled, y, folds, 1), atol=1e-6)
