import pytest

from .helpers import run_module

ARGS = ("data.eegs=12", "data.patients=4", "input.tile=[16,32]", "data.sampling=fixed")

pytestmark = pytest.mark.slow  # trains real models or runs commands


def test_prepare_generates_the_embedded_dataset_and_builds_then_reuses_the_cache(tmp_path):
    first = run_module("hms.prepare", *ARGS, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "train kaggle: 12 items, 0 bad" in first.stdout and "train eeg: 12 items, 0 bad" in first.stdout
    assert "test eeg: 8 items" in first.stdout
    assert "features" in first.stderr  # the progress bar
    caches = sorted(p.name for p in (tmp_path / "data" / "cache").iterdir())
    assert len(caches) == 4 and all("16x32" in name for name in caches)
    again = run_module("hms.prepare", *ARGS, cwd=tmp_path)
    assert again.returncode == 0 and "features" not in again.stderr  # nothing left to build
    assert sorted(p.name for p in (tmp_path / "data" / "cache").iterdir()) == caches
