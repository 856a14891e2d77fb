"""Test-split scoring where the answers are known (`hms.predict ... --answers FILE`).

An answer key is a CSV of `eeg_id` and the six vote columns (`seizure_vote` ... `other_vote`), one row per test eeg_id,
as the embedded synthetic data writes it (`_synthetic/test_answers.csv`). A submission is scored with the official
metric (votes normalised per row, predictions clipped), beside the class prior of the training labels on the same
rows, and on the rows with >= 10 votes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .constants import VOTE_COLUMNS
from .dataset import HQ_VOTES
from .metrics import kl_divergence
from .synthetic.dataset import META_DIR

ANSWERS_FILE = "test_answers.csv"  # in a synthetic dataset's META_DIR


class AnswersError(ValueError):
    """An answer key that cannot score the submission; the message names the file and what is wrong."""


def default_answers(root) -> Path | None:
    """The embedded (synthetic) dataset's answer key under `root`, where there is one."""
    path = Path(root) / META_DIR / ANSWERS_FILE
    return path if path.is_file() else None


def read_answers(path, eeg_ids) -> pd.DataFrame:
    """The answer key at `path`, checked against the submission's `eeg_ids`: every one answered exactly once, no other."""
    path = Path(path)
    if not path.is_file():
        raise AnswersError(f"{path}: no such answer key")
    try:
        key = pd.read_csv(path)
    except Exception as error:  # noqa: BLE001 - a file pandas cannot read is named
        raise AnswersError(f"{path}: not a CSV answer key ({type(error).__name__}: {error})") from None
    missing = [c for c in ("eeg_id", *VOTE_COLUMNS) if c not in key]
    if missing:
        raise AnswersError(f"{path}: lacks column(s) {missing} (an answer key has eeg_id and {', '.join(VOTE_COLUMNS)})")
    votes = key[list(VOTE_COLUMNS)].apply(pd.to_numeric, errors="coerce")
    bad = ~np.isfinite(votes.to_numpy(np.float64)).all(axis=1) | (votes < 0).any(axis=1).to_numpy() \
        | ~(votes.sum(axis=1) > 0).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise AnswersError(f"{path}: row {row + 2} (eeg_id {key.eeg_id.iloc[row]}) has votes that are not non-negative "
                           f"numbers with a positive sum ({int(bad.sum())} such row(s))")
    twice = key.eeg_id[key.eeg_id.duplicated()]
    if len(twice):
        raise AnswersError(f"{path}: eeg_id {twice.iloc[0]} is answered more than once ({len(twice)} duplicate row(s))")
    asked, answered = set(map(int, eeg_ids)), set(map(int, key.eeg_id))
    unanswered, foreign = sorted(asked - answered), sorted(answered - asked)
    if unanswered:
        raise AnswersError(f"{path}: a partial key: {len(unanswered)} of the {len(asked)} test eeg_ids have no answer "
                           f"(e.g. {unanswered[:5]})")
    if foreign:
        raise AnswersError(f"{path}: a key for another test set: {len(foreign)} eeg_id(s) are not in the test set "
                           f"(e.g. {foreign[:5]})")
    out = key[["eeg_id"]].astype({"eeg_id": "int64"}).copy()
    out[list(VOTE_COLUMNS)] = votes.to_numpy(np.float64)
    return out


def score(submission: pd.DataFrame, answers: pd.DataFrame, prior: np.ndarray | None = None) -> dict[str, float]:
    """`test_kl` of the submission (official metric), `test_kl_hq` on rows with >= 10 votes, and where `prior` (6
    class probabilities of the training labels) is given the same for it: `test_prior_kl`, `test_prior_kl_hq`."""
    merged = answers.merge(submission.astype({"eeg_id": "int64"}), on="eeg_id", suffixes=("", "_p"), validate="one_to_one")
    votes = merged[list(VOTE_COLUMNS)].to_numpy(np.float64)
    y = votes / votes.sum(axis=1, keepdims=True)
    p = merged[[f"{c}_p" for c in VOTE_COLUMNS]].to_numpy(np.float64)
    hq = votes.sum(axis=1) >= HQ_VOTES
    scores = {"test_kl": kl_divergence(y, p), "test_rows": float(len(y))}
    if hq.any():
        scores["test_kl_hq"] = kl_divergence(y[hq], p[hq])
    if prior is not None:
        q = np.broadcast_to(np.asarray(prior, np.float64), y.shape)
        scores["test_prior_kl"] = kl_divergence(y, q)
        if hq.any():
            scores["test_prior_kl_hq"] = kl_divergence(y[hq], q[hq])
    return scores


def line(scores: dict) -> str:
    out = f"test_kl {scores['test_kl']:.4f}"
    if "test_prior_kl" in scores:
        out += f"  test_prior_kl {scores['test_prior_kl']:.4f}"
    if "test_kl_hq" in scores:
        out += f"   (>= {HQ_VOTES} votes: test_kl_hq {scores['test_kl_hq']:.4f}"
        out += f"  test_prior_kl_hq {scores['test_prior_kl_hq']:.4f})" if "test_prior_kl_hq" in scores else ")"
    return out + f"  over {int(scores['test_rows'])} test rows"
