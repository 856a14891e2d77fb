import numpy as np
import pandas as pd
import pytest

from hms.constants import VOTE_COLUMNS
from hms.metrics import kaggle_score, kl_divergence, kl_loss, kl_metric


def official_kl(solution: pd.DataFrame, submission: pd.DataFrame, epsilon=10 ** -15) -> float:
    """The competition's own scoring code (kaggle_kl_div.score, micro average), transcribed."""
    solution, submission = solution.copy(), submission.copy()
    for col in solution.columns:
        if not pd.api.types.is_float_dtype(solution[col]):
            solution[col] = solution[col].astype(float)
        submission[col] = np.clip(submission[col], epsilon, 1 - epsilon)
        y_nonzero_indices = solution[col] != 0
        solution.loc[y_nonzero_indices, col] = solution.loc[y_nonzero_indices, col] * np.log(
            solution.loc[y_nonzero_indices, col] / submission.loc[y_nonzero_indices, col])
        solution.loc[~y_nonzero_indices, col] = 0
    return float(np.average(solution.sum(axis=1)))


def cases():
    rng = np.random.default_rng(0)
    y = rng.dirichlet(np.ones(6), 200)
    q = rng.dirichlet(np.ones(6), 200)
    votes = rng.multinomial(3, [0.2, 0.1, 0.1, 0.1, 0.1, 0.4], 200)
    y_zero = votes / votes.sum(axis=1, keepdims=True)
    onehot = np.eye(6)[rng.integers(0, 6, 50)]
    extreme_q = np.where(rng.uniform(size=(50, 6)) < 0.5, 0.0, 1.0)
    tiny_q = rng.dirichlet(np.full(6, 0.01), 200)
    return {"random": (y, q), "zeros_in_truth": (y_zero, q), "onehot_vs_hard": (onehot, extreme_q),
            "tiny_probabilities": (y_zero, tiny_q), "perfect": (y_zero, y_zero), "unnormalised_prediction": (y, q * 3)}


@pytest.mark.parametrize("name", list(cases()))
def test_kl_matches_official_formula(name):
    y, q = cases()[name]
    columns = list(VOTE_COLUMNS)
    expected = official_kl(pd.DataFrame(y, columns=columns), pd.DataFrame(q, columns=columns))
    assert abs(kl_divergence(y, q) - expected) < 1e-9


def test_kaggle_frame_form_normalises_votes_and_aligns_ids():
    rng = np.random.default_rng(1)
    votes = rng.multinomial(5, np.full(6, 1 / 6), 30)
    ids = np.arange(30) + 1000
    q = rng.dirichlet(np.ones(6), 30)
    solution = pd.DataFrame(votes, columns=list(VOTE_COLUMNS)).assign(eeg_id=ids)
    submission = pd.DataFrame(q, columns=list(VOTE_COLUMNS)).assign(eeg_id=ids).iloc[::-1]  # other row order
    assert kaggle_score(solution, submission) == pytest.approx(kl_divergence(votes / 5, q), abs=1e-12)
    with pytest.raises(ValueError, match="lacks"):
        kaggle_score(solution, submission.iloc[1:])


def test_keras_loss_and_metric_agree_with_the_score():
    y, q = cases()["zeros_in_truth"]
    per_row = np.asarray(kl_loss(y.astype("float32"), q.astype("float32")))
    assert per_row.mean() == pytest.approx(kl_divergence(y, q), abs=1e-5)
    metric = kl_metric()
    for start in range(0, 200, 64):  # batches of unequal size, as an epoch ends
        metric.update_state(y[start:start + 64].astype("float32"), q[start:start + 64].astype("float32"))
    assert float(metric.result()) == pytest.approx(kl_divergence(y, q), abs=1e-5)
    y1, q1 = cases()["onehot_vs_hard"]
    assert np.asarray(kl_loss(y1.astype("float32"), q1.astype("float32"))).mean() == pytest.approx(kl_divergence(y1, q1), rel=1e-5)


def test_a_certain_right_prediction_still_pays_the_clip():
    # Kaggle clips predictions to 1 - 1e-15, so even a one-hot prediction of a one-hot truth scores
    # log(1 / (1 - 1e-15)) per row, not 0 (worked out here; the official code above gives the same).
    y = np.eye(6)[[0, 3, 5]]
    expected = np.log(1.0 / (1 - 1e-15))  # y * log(y / q) with q clipped, in float64 as the formula does
    assert kl_divergence(y, y) == pytest.approx(expected, rel=1e-9, abs=0) and expected > 1e-16
    columns = list(VOTE_COLUMNS)
    assert official_kl(pd.DataFrame(y, columns=columns), pd.DataFrame(y, columns=columns)) == pytest.approx(expected, rel=1e-9, abs=0)


def test_bad_shapes_are_refused():
    y = np.full((4, 6), 1 / 6)
    with pytest.raises(ValueError, match="one shape"):
        kl_divergence(y, y[:3])  # other number of rows, both 2-D
    with pytest.raises(ValueError, match="one shape"):
        kl_divergence(y[:3], y)  # fewer rows in the truth
    with pytest.raises(ValueError, match="one shape"):
        kl_divergence(y[0], y[0])  # one shape, but not (n, classes)
    with pytest.raises(ValueError, match="one shape"):
        kl_divergence(y[None], y[None])  # nor (1, n, classes)


def test_kaggle_frames_missing_a_column_or_an_id_are_named():
    votes = np.ones((3, 6))
    solution = pd.DataFrame(votes, columns=list(VOTE_COLUMNS)).assign(eeg_id=[7, 8, 9])
    submission = solution.copy()
    with pytest.raises(ValueError, match="lpd_vote"):
        kaggle_score(solution, submission.drop(columns="lpd_vote"))  # missing from the submission only
    with pytest.raises(ValueError, match="lpd_vote"):
        kaggle_score(solution.drop(columns="lpd_vote"), submission)  # missing from the solution only
    with pytest.raises(ValueError, match="lacks 2 eeg_ids of the solution, e.g. 8"):
        kaggle_score(solution, submission.iloc[[0]])  # the first lacking id is named


def test_keras_loss_has_finite_gradients_where_votes_are_zero():
    # Zero-vote classes are common (most rows); log(0) must not leak a NaN into the gradient through tf.where.
    import tensorflow as tf

    y, q = cases()["zeros_in_truth"]
    assert (y == 0).any()
    logits = tf.Variable(np.log(q).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(kl_loss(tf.constant(y, "float32"), tf.nn.softmax(logits)))
    gradient = tape.gradient(loss, logits).numpy()
    assert np.isfinite(gradient).all() and np.abs(gradient).max() > 0


def test_keras_loss_clips_as_the_score_does():
    # Predictions above 1 (unnormalised) are clipped to 1 - 1e-15 by the score; the loss must agree.
    y, q = cases()["unnormalised_prediction"]
    assert q.max() > 1
    assert np.asarray(kl_loss(y.astype("float32"), q.astype("float32"))).mean() == pytest.approx(kl_divergence(y, q), abs=1e-5)
