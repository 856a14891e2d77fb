"""Shared, session-scoped fixtures: expensive things are built once (helpers live in tests/helpers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hms import logs

from .helpers import KAGGLE_SAMPLE

logs.install()  # as every command does where it starts: hms's messages on the console


@pytest.fixture(scope="session")
def kaggle_sample() -> Path:
    """The real public test files in Kaggle's layout (shared/data/kaggle_sample)."""
    if not KAGGLE_SAMPLE.is_dir():
        pytest.fail(f"{KAGGLE_SAMPLE} is missing: the shared folder must sit beside the repository (or set HMS_SHARED)")
    return KAGGLE_SAMPLE


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A small synthetic dataset (40 train eeg_ids, 10 patients, 8 test eeg_ids), generated once."""
    from hms.synthetic import SynthSpec, generate

    root = tmp_path_factory.mktemp("synthetic") / "hms"
    generate(root, SynthSpec(eegs=40, patients=10, seed=7, test_eegs=8))
    return root


# The files that take longest, first: the two xdist workers pull whole files in this order, so the long ones
# run side by side from the start instead of one of them starting last (measured wall times on 2 cores).
HEAVY_FIRST = ("test_docs.py", "test_backends.py", "test_inference.py", "test_signal_models.py", "test_search.py", "test_cv.py",
               "test_load.py", "test_fuzz.py", "test_preemption.py", "test_disk_full.py", "test_server_outage.py", "test_packaging.py", "test_distributed.py", "test_parallel.py",
               "test_bagging.py", "test_store_race.py", "test_synth.py", "test_prepare.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))
