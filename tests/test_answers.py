"""Test-split scoring (`hms.predict --answers`): the official metric against an answer key, and a wrong or partial
key refused by name. The key is the synthetic dataset's own file."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import rel_entr

from hms.answers import AnswersError, default_answers, read_answers, score
from hms.constants import VOTE_COLUMNS


@pytest.fixture
def key(synthetic_root):
    path = default_answers(synthetic_root)
    assert path is not None and path.name == "test_answers.csv"
    return path, pd.read_csv(path)


def _submission(eeg_ids, seed=0):
    p = np.random.default_rng(seed).dirichlet(np.ones(6), size=len(eeg_ids))
    return pd.DataFrame({"eeg_id": eeg_ids, **{c: p[:, i] for i, c in enumerate(VOTE_COLUMNS)}})


def test_a_submission_is_scored_with_the_official_metric_beside_the_prior(key):
    path, frame = key
    sub = _submission(frame.eeg_id.to_numpy()[::-1])  # another order than the key's
    prior = np.array([0.3, 0.1, 0.1, 0.1, 0.1, 0.3])
    got = score(sub, read_answers(path, sub.eeg_id), prior)
    # Independently: scipy's relative entropy on the votes normalised per row, rows matched by eeg_id.
    votes = frame.set_index("eeg_id")[list(VOTE_COLUMNS)].to_numpy(float)
    y = votes / votes.sum(axis=1, keepdims=True)
    q = sub.set_index("eeg_id").loc[frame.eeg_id, list(VOTE_COLUMNS)].to_numpy(float)
    assert got["test_kl"] == pytest.approx(rel_entr(y, np.clip(q, 1e-15, 1)).sum(axis=1).mean(), rel=1e-12)
    assert got["test_prior_kl"] == pytest.approx(rel_entr(y, prior).sum(axis=1).mean(), rel=1e-12)
    assert got["test_rows"] == len(frame)
    hq = votes.sum(axis=1) >= 10
    if hq.any():
        assert got["test_kl_hq"] == pytest.approx(rel_entr(y[hq], np.clip(q[hq], 1e-15, 1)).sum(axis=1).mean(), rel=1e-12)


@pytest.mark.parametrize("damage, says", [
    (lambda f: f.iloc[1:], "a partial key: 1 of the"),
    (lambda f: f.assign(eeg_id=f.eeg_id + 1), "no answer"),
    (lambda f: pd.concat([f, f.assign(eeg_id=f.eeg_id.max() + 1).iloc[:1]]), "a key for another test set"),
    (lambda f: pd.concat([f, f.iloc[:1]]), "answered more than once"),
    (lambda f: f.drop(columns="lpd_vote"), "lacks column(s) ['lpd_vote']"),
    (lambda f: f.assign(seizure_vote=f.seizure_vote.astype(object).where(f.index != 2, "x")), "row 4"),
    (lambda f: f.assign(**{c: 0 for c in VOTE_COLUMNS}), "positive sum"),
])
def test_a_wrong_or_partial_key_is_a_clear_error_naming_the_file(key, tmp_path, damage, says):
    path, frame = key
    bad = tmp_path / "answers.csv"
    damage(frame).to_csv(bad, index=False)
    with pytest.raises(AnswersError) as error:
        read_answers(bad, frame.eeg_id)
    assert str(bad) in str(error.value) and says in str(error.value)


def test_a_missing_key_is_named(tmp_path):
    with pytest.raises(AnswersError, match="no such answer key"):
        read_answers(tmp_path / "nope.csv", [1])
    assert default_answers(tmp_path) is None
