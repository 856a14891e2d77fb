import numpy as np
import pandas as pd
import pytest

from hms.dataset import assign_folds


def make_samples(n=400, patients=80, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"patient_id": rng.integers(0, patients, n), "consensus": rng.choice(6, n, p=[.15, .14, .1, .07, .12, .42])})


def test_no_patient_in_two_folds_and_every_fold_used():
    samples = make_samples()
    folds = assign_folds(samples, 5, seed=3)
    assert set(folds) == set(range(5))
    assert (samples.assign(fold=folds).groupby("patient_id").fold.nunique() == 1).all()


def test_deterministic_per_seed_and_different_across_seeds():
    samples = make_samples()
    assert np.array_equal(assign_folds(samples, 5, 1), assign_folds(samples, 5, 1))
    assert not np.array_equal(assign_folds(samples, 5, 1), assign_folds(samples, 5, 2))


def test_stratified_on_consensus():
    samples = make_samples(2000, 400)
    folds = assign_folds(samples, 5, 0)
    shares = pd.crosstab(folds, samples.consensus, normalize="index")
    assert (shares.max() - shares.min()).max() < 0.05


def test_too_few_patients_is_a_clear_error():
    with pytest.raises(ValueError, match="at least 5 patients"):
        assign_folds(make_samples(20, 3), 5, 0)


def test_boundaries_two_folds_and_as_many_patients_as_folds():
    two = assign_folds(make_samples(40, 10), 2, 0)
    assert set(two) == {0, 1}
    with pytest.raises(ValueError, match="at least 2"):
        assign_folds(make_samples(40, 10), 1, 0)
    samples = pd.DataFrame({"patient_id": np.repeat(np.arange(5), 4), "consensus": np.tile([0, 1, 2, 5], 5)})
    folds = assign_folds(samples, 5, 0)  # exactly one patient per fold
    assert sorted(samples.assign(fold=folds).groupby("fold").patient_id.nunique()) == [1] * 5
