"""The out-of-fold contract on hand-made frames: columns, scores and the run's baselines, worked out here."""

import numpy as np
import pandas as pd
import pytest

from hms.constants import CLASSES
from hms.oof import OOF_COLUMNS, PRED_COLUMNS, TARGET_COLUMNS, RunBaselines, cv_scores, oof_frame, score_line


def _kl(y, p):
    """The official KL written out: mean over rows of sum_c y log(y / p), with 0 log 0 = 0, p clipped at 1e-15."""
    p = np.clip(p, 1e-15, 1)
    return float(np.mean([sum(a * np.log(a / b) for a, b in zip(yr, pr) if a > 0) for yr, pr in zip(y, p)]))


@pytest.fixture
def samples():
    rng = np.random.default_rng(3)
    n = 30
    votes = rng.integers(0, 2, (n, 6)) + np.eye(6, dtype=int)[rng.integers(0, 6, n)]  # 1-7 votes; odd rows get 7 more
    frame = pd.DataFrame({"eeg_id": rng.permutation(np.arange(1000, 1000 + n)), "fold": np.arange(n) % 3,
                          "total_votes": votes.sum(axis=1) + 7 * (np.arange(n) % 2)})  # about half the rows >= 10
    for k, column in enumerate(TARGET_COLUMNS):
        frame[column] = votes[:, k] / votes.sum(axis=1)
    frame["patient_id"] = np.arange(n) // 2
    return frame


def test_oof_frame_has_the_contract_columns_and_the_rows_asked_for(samples):
    rows = np.array([4, 1, 7])
    p = np.random.default_rng(0).dirichlet(np.ones(6), 3)
    frame = oof_frame(samples, rows, p)
    assert list(frame.columns) == list(OOF_COLUMNS) == ["eeg_id", "fold", "total_votes", *[f"y_{c}" for c in CLASSES],
                                                         *[f"p_{c}" for c in CLASSES]]
    assert frame.eeg_id.tolist() == samples.eeg_id.iloc[rows].tolist()
    np.testing.assert_array_equal(frame[list(PRED_COLUMNS)].to_numpy(), p)
    assert (frame[list(PRED_COLUMNS)].dtypes == np.float64).all()


def test_cv_scores_are_the_official_kl_overall_on_hq_rows_and_per_fold(samples):
    p = np.random.default_rng(1).dirichlet(np.ones(6), len(samples))
    frame = oof_frame(samples, np.arange(len(samples)), p)
    y = samples[list(TARGET_COLUMNS)].to_numpy()
    scores = cv_scores(frame)
    assert scores["cv_kl"] == pytest.approx(_kl(y, p), abs=1e-12)
    hq = samples.total_votes.to_numpy() >= 10
    assert 0 < hq.sum() < len(hq) and scores["cv_kl_hq"] == pytest.approx(_kl(y[hq], p[hq]), abs=1e-12)
    for fold in range(3):
        rows = samples.fold.to_numpy() == fold
        assert scores[f"fold{fold}_kl"] == pytest.approx(_kl(y[rows], p[rows]), abs=1e-12)
    folds = [_kl(y[samples.fold.to_numpy() == k], p[samples.fold.to_numpy() == k]) for k in range(3)]
    mean = sum(folds) / 3
    assert scores["cv_kl_std"] == pytest.approx((sum((f - mean) ** 2 for f in folds) / 2) ** 0.5, abs=1e-12)  # spread
    assert set(scores) == {"cv_kl", "cv_kl_hq", "fold0_kl", "fold1_kl", "fold2_kl", "cv_kl_std"}
    assert "cv_kl_hq" not in cv_scores(frame[~hq])


def test_run_baselines_predict_each_fold_with_the_other_folds_prior(samples):
    sources = [np.random.default_rng(2).normal(size=(len(samples), 8, 4, 4)).astype(np.float16)]
    baselines = RunBaselines(samples, sources, np.arange(len(samples)))
    y = samples[list(TARGET_COLUMNS)].to_numpy()
    folds = samples.fold.to_numpy()
    for fold in range(3):
        prior = baselines.fold(fold)["prior"]
        expected = y[folds != fold].mean(axis=0)
        np.testing.assert_allclose(prior[list(PRED_COLUMNS)].to_numpy(), np.tile(expected, ((folds == fold).sum(), 1)))
        assert prior.eeg_id.tolist() == samples.eeg_id[folds == fold].tolist()
    scores = baselines.scores([0, 1, 2])
    prior_all = np.vstack([np.tile(y[folds != f].mean(axis=0), ((folds == f).sum(), 1)) for f in range(3)])
    y_in_fold_order = np.vstack([y[folds == f] for f in range(3)])
    assert scores["prior_kl"] == pytest.approx(_kl(y_in_fold_order, prior_all), abs=1e-12)
    assert {"prior_kl", "baseline_kl", "prior_kl_hq", "baseline_kl_hq"} <= set(scores)
    table = baselines.frame([0, 1, 2])
    assert table.eeg_id.is_monotonic_increasing
    assert list(table.columns) == ["eeg_id", "fold", *[f"prior_{c}" for c in CLASSES], *[f"baseline_{c}" for c in CLASSES]]
    line = score_line({"cv_kl": 0.5, **scores})
    assert line.startswith(f"cv_kl 0.5000  prior_kl {scores['prior_kl']:.4f}  baseline_kl {scores['baseline_kl']:.4f}")
    assert line.endswith(f"   (>= 10 votes: prior_kl_hq {scores['prior_kl_hq']:.4f}  baseline_kl_hq {scores['baseline_kl_hq']:.4f})")
    assert "votes" not in score_line({"cv_kl": 0.5, "prior_kl": 1.0})  # no such rows, no brackets


def test_the_not_learned_warning_states_the_threshold_it_used():
    from hms.baselines import LEARNED_RATIO
    from hms.oof import not_learned_warning

    text = not_learned_warning({"cv_kl": 1.2, "prior_kl": 1.25, "baseline_kl": 0.7})
    assert f"it needs <= {LEARNED_RATIO} x prior_kl = {LEARNED_RATIO * 1.25:.4f}" in text and "1.1250" in text
    assert "baseline_kl 0.7000" in text and "hms.learned=false" in text
