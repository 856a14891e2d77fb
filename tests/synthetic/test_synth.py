import hashlib

import pytest
import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from hms.constants import EEG_RATE, TEST_COLUMNS, TRAIN_COLUMNS, VOTE_COLUMNS
from hms.dataset import load_train, read_eeg, read_spectrogram
from hms.synthetic import META_DIR, SynthSpec, generate, read_meta
from hms.synthetic.dataset import RATER_COUNTS
from hms.synthetic.signals import kaggle_spectrogram

from ..helpers import TRAIN_VOTES


def test_files_match_the_real_schemas(synthetic_root, kaggle_sample):
    for sub in ("test_eegs", "test_spectrograms"):
        real = pq.read_schema(next((kaggle_sample / sub).glob("*.parquet")))
        for kind in ("train_" + sub.removeprefix("test_"), sub):
            ours = pq.read_schema(next((synthetic_root / kind).glob("*.parquet")))
            assert ours.names == real.names and ours.types == real.types, kind
    assert tuple(pd.read_csv(synthetic_root / "train.csv").columns) == TRAIN_COLUMNS
    assert tuple(pd.read_csv(synthetic_root / "test.csv").columns) == TEST_COLUMNS
    real_sub = pd.read_csv(kaggle_sample / "sample_submission.csv")
    assert list(pd.read_csv(synthetic_root / "sample_submission.csv").columns) == list(real_sub.columns)


def test_value_scales_match_the_real_files(synthetic_root, kaggle_sample):
    real_eeg = read_eeg(kaggle_sample / "test_eegs" / "3911565283.parquet")
    real_spec = read_spectrogram(kaggle_sample / "test_spectrograms" / "853520.parquet")[:, 1:]
    test = pd.read_csv(synthetic_root / "test.csv")
    eeg = read_eeg(synthetic_root / "test_eegs" / f"{test.eeg_id[0]}.parquet")
    spec = read_spectrogram(synthetic_root / "test_spectrograms" / f"{test.spectrogram_id[0]}.parquet")
    assert eeg.shape == real_eeg.shape == (10_000, 20)  # test EEGs are exactly 50 s
    assert spec.shape == (300, 401)  # test spectrograms exactly 10 minutes
    assert np.array_equal(spec[:3, 0], [1, 3, 5])
    scalp_std, real_std = np.nanstd(eeg[:, :19], axis=0).mean(), np.nanstd(real_eeg[:, :19], axis=0).mean()
    assert 0.3 < scalp_std / real_std < 3  # µV, tens of µV
    assert np.allclose(eeg, np.round(eeg, 2), atol=1e-3)  # two decimals, as Kaggle's
    median, real_median = np.nanmedian(spec[:, 1:]), np.nanmedian(real_spec)
    assert 0.2 < median / real_median < 5 and np.nanmax(spec[:, 1:]) < 1e5


def test_spectrogram_is_computed_from_the_same_recording_as_the_eegs(synthetic_root):
    """Kaggle's view and the EEG view agree: spectrogram rows inside an EEG excerpt equal its own spectrum."""
    train = pd.read_csv(synthetic_root / "train.csv")
    row = train.iloc[0]
    eeg = read_eeg(synthetic_root / "train_eegs" / f"{row.eeg_id}.parquet")
    spec = read_spectrogram(synthetic_root / "train_spectrograms" / f"{row.spectrogram_id}.parquet")
    # The excerpt's 50 s window centre equals the spectrogram window centre: offset + 300 s.
    centre = row.spectrogram_label_offset_seconds + 300 - (row.eeg_label_offset_seconds + 25)  # excerpt start, recording time
    start_row = int(np.ceil((centre + 3) / 2))  # first row whose 1024-sample window lies inside the excerpt
    excerpt_rows = (len(eeg) / EEG_RATE - 6) // 2
    ours = kaggle_spectrogram(np.pad(eeg, ((int(centre * EEG_RATE) % 400, 0), (0, 0))))
    shift = int(centre * EEG_RATE) // 400
    compared = 0
    for k in range(start_row, start_row + int(excerpt_rows)):
        if np.isnan(spec[k, 1:]).any() or k - shift >= len(ours):
            continue
        np.testing.assert_allclose(ours[k - shift, 1:], spec[k, 1:], rtol=0.02, atol=0.02)
        compared += 1
    assert compared >= 5


@pytest.mark.slow
def test_deterministic_per_seed(tmp_path):
    def digest(root):
        h = hashlib.sha256((root / "train.csv").read_bytes())
        for f in sorted((root / "train_eegs").glob("*.parquet"))[:3]:
            h.update(read_eeg(f).tobytes())
        return h.hexdigest()

    spec = SynthSpec(eegs=12, patients=4, seed=3, test_eegs=2)
    a, b = generate(tmp_path / "a", spec), generate(tmp_path / "b", spec)
    generate(tmp_path / "c", SynthSpec(eegs=12, patients=4, seed=4, test_eegs=2))
    assert digest(tmp_path / "a") == digest(tmp_path / "b") != digest(tmp_path / "c")
    assert a["prior_kl"] == b["prior_kl"]


@pytest.mark.slow
def test_recordings_and_extra_seconds_shape_a_kaggle_like_set(tmp_path):
    """--recordings sets the number of spectrograms the eeg_ids are cut from; --extra-seconds the EEG lengths,
    and so the labelled windows per eeg_id (every 2 s of extra length can hold one more window)."""
    generate(tmp_path / "a", SynthSpec(eegs=30, patients=5, seed=1, test_eegs=1, recordings=20, extra_seconds=40))
    generate(tmp_path / "b", SynthSpec(eegs=30, patients=5, seed=1, test_eegs=1))
    a, b = (pd.read_csv(tmp_path / x / "train.csv") for x in "ab")
    assert a.spectrogram_id.nunique() == len(list((tmp_path / "a" / "train_spectrograms").glob("*.parquet"))) == 20
    assert b.spectrogram_id.nunique() == 6  # the default: eegs / 5
    seconds = {x: [len(read_eeg(f)) / EEG_RATE for f in (tmp_path / x / "train_eegs").glob("*.parquet")] for x in "ab"}
    assert max(seconds["b"]) <= 72 < max(seconds["a"]) <= 90 and min(seconds["a"]) >= 50
    assert a.groupby("eeg_id").size().mean() > b.groupby("eeg_id").size().mean()
    assert (a.eeg_label_offset_seconds <= a.eeg_id.map(dict(zip(*[[int(f.stem) for f in (tmp_path / "a" / "train_eegs").glob("*.parquet")],
                                                                  [s - 50 for s in seconds["a"]]])))).all()
    with pytest.raises(ValueError, match="recordings"):
        generate(tmp_path / "c", SynthSpec(eegs=30, patients=5, recordings=4))


def test_structure_patients_shared_spectrograms_and_nan(synthetic_root):
    train = pd.read_csv(synthetic_root / "train.csv")
    assert train.patient_id.nunique() == 10
    assert (train.groupby("patient_id").eeg_id.nunique() > 1).any()  # patients with several EEGs
    assert (train.groupby("spectrogram_id").eeg_id.nunique() > 1).any()  # spectrograms shared by several eeg_ids
    assert (train.groupby("eeg_id").size() > 1).any()  # several labelled windows per eeg_id
    assert train.expert_consensus.isin(["Seizure", "LPD", "GPD", "LRDA", "GRDA", "Other"]).all()
    assert not set(pd.read_csv(synthetic_root / "test.csv").patient_id) & set(train.patient_id)


@pytest.mark.slow
def test_nan_runs_appear_in_a_larger_dataset(tmp_path):
    generate(tmp_path, SynthSpec(eegs=60, patients=12, seed=1, test_eegs=1))
    nan_files = sum(np.isnan(read_eeg(f)).any() for f in (tmp_path / "train_eegs").glob("*.parquet"))
    assert 1 <= nan_files < 30


def test_rater_counts_follow_the_real_ones():
    real = pd.read_csv(TRAIN_VOTES).groupby("eeg_id").total_votes.max().value_counts()
    assert dict(sorted(real.items())) == RATER_COUNTS


def test_votes_follow_true_probabilities_and_reference_scores(synthetic_root):
    meta = read_meta(synthetic_root)
    truth = pd.read_csv(synthetic_root / META_DIR / "truth.csv")
    assert meta["bayes_floor_kl"] < 0.7 * meta["prior_kl"]
    train = truth[truth.split == "train"]
    p = train[[c for c in truth.columns if c.startswith("p_")]].to_numpy()
    votes = train[list(VOTE_COLUMNS)].to_numpy()
    assert (votes.argmax(axis=1) == p.argmax(axis=1)).mean() > 0.6
    samples, _ = load_train(synthetic_root)
    assert set(samples.eeg_id) == set(train.eeg_id)
    answers = pd.read_csv(synthetic_root / META_DIR / "test_answers.csv")
    assert set(answers.eeg_id) == set(pd.read_csv(synthetic_root / "test.csv").eeg_id)


@pytest.mark.slow
def test_class_patterns_are_visible_in_the_spectrogram(tmp_path):
    """Delta-rhythm classes (LRDA, GRDA) put more 1-3 Hz power in the spectrogram window than the others."""
    generate(tmp_path, SynthSpec(eegs=60, patients=12, seed=2, test_eegs=1))
    truth = pd.read_csv(tmp_path / META_DIR / "truth.csv").set_index("eeg_id")
    samples, _ = load_train(tmp_path)
    ratio = []
    for s in samples.itertuples():
        spec = read_spectrogram(tmp_path / "train_spectrograms" / f"{s.spectrogram_id}.parquet")
        row = int(s.spec_offset // 2) + 150
        centre = spec[row - 10:row + 10, 1:].reshape(20, 4, 100)
        ratio.append(np.log(np.nanmean(centre[..., 2:12]) / np.nanmean(centre[..., 40:90])))
    delta = truth.loc[samples.eeg_id, ["p_lrda", "p_grda"]].sum(axis=1).to_numpy()
    assert np.isfinite(ratio).all()
    assert np.corrcoef(delta, ratio)[0, 1] > 0.3


ENSURE = """
import sys
from hms.synthetic import SynthSpec
from hms.synthetic.dataset import ensure_dataset
ensure_dataset(sys.argv[1], SynthSpec(eegs=24, patients=6, seed=3, test_eegs=8), progress=False)
print("ready")
"""


def test_two_processes_asking_for_the_embedded_dataset_at_once_both_get_it(tmp_path):
    """Two runs started together on a fresh clone: before the lock, the second removed the first's half-generated
    folder and the first died with a traceback (OSError: Cannot save file into a non-existent directory)."""
    import subprocess
    import sys

    root = tmp_path / "data" / "synthetic" / "small"
    processes = [subprocess.Popen([sys.executable, "-c", ENSURE, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    assert all(out.strip() == "ready" for out, _ in outputs)
    assert len(list((root / "train_eegs").glob("*.parquet"))) == 24 and not root.with_name("small.partial").exists()
