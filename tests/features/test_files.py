"""The per-file cache (data.cache=files): the windows' tiles made per batch from each data file stored once."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hms.config import compose
from hms.constants import EEG_COLUMNS
from hms.dataset import DataError, load_train, read_eeg
from hms.features.cache import FeatureOptions, build_caches
from hms.features.files import WindowTiles, build_window_caches
from hms.features.notebook import librosa_eeg_spectrogram
from hms.inputs import cache_mode, train_items

FULL = (128, 256)
SMALL = (16, 32)


@pytest.fixture(scope="module")
def windows(synthetic_root):
    """Every labelled window (several per eeg_id, overlapping) of 12 eeg_ids of the small synthetic set."""
    samples, labelled = load_train(synthetic_root)
    items = train_items(samples, labelled, "random")
    return items[items.eeg_id.isin(samples.eeg_id.iloc[:12])].reset_index(drop=True)


@pytest.fixture(scope="module")
def both_caches(synthetic_root, windows, tmp_path_factory):
    """Both caches of the windows at a small tile size (the resize is the same code in both)."""
    store = tmp_path_factory.mktemp("files")
    options = FeatureOptions(tile=SMALL, cache_dir=str(store), workers=1, progress=False)  # in-process: no pool to start
    return store, build_caches(synthetic_root, "train", ("kaggle", "eeg"), windows, options), \
        build_window_caches(synthetic_root, "train", ("kaggle", "eeg"), windows, options)


def test_per_file_tiles_are_the_tile_caches_own_and_match_librosa(synthetic_root, windows, both_caches):
    _, tiles, files = both_caches
    rows = np.random.default_rng(0).choice(len(windows), 24, replace=False)
    for kind in ("kaggle", "eeg"):
        assert files[kind].features.shape == tiles[kind].features.shape == (len(windows), *SMALL, 4)
        made = files[kind].features[np.sort(rows)]
        np.testing.assert_array_equal(files[kind].features[int(np.sort(rows)[3])], made[3])  # one item as in a batch
        finished = np.asarray(tiles[kind].features[np.sort(rows)], np.float32)
        if kind == "eeg":  # stored losslessly: the tile cache's own float16 tiles, but for the last bit of a few
            # (the spectrogram's BLAS products may round a value on either side of a float16 step, depending on the
            # arrays' memory layout: 9 of 49152 values with numpy 2.4's OpenBLAS)
            steps = np.abs(made - finished) / np.spacing(np.abs(finished).astype(np.float16)).astype(np.float32)
            assert steps.max() <= 1 and (made == finished).mean() > 0.999, (steps.max(), (made != finished).sum())
        else:  # power stored as float16 (relative error 2**-11 before the log): a few float16 steps of a tile value
            assert 0 < np.abs(made - finished).max() <= 4e-3
    # Full-size tiles from the same per-file cache, against the notebook's librosa formula on the file's own window.
    eeg = files["eeg"].features
    full = WindowTiles(eeg.files, eeg.file_ids, windows.eeg_offset.to_numpy(), FULL)
    for i in rows[:3]:
        item = windows.iloc[int(i)]
        values = read_eeg(synthetic_root / "train_eegs" / f"{int(item.eeg_id)}.parquet")
        start = int(round(item.eeg_offset * 200))
        reference = librosa_eeg_spectrogram(pd.DataFrame(values[start:start + 10_000], columns=list(EEG_COLUMNS)))
        assert np.abs(full[int(i)] - reference).max() <= 1e-3


def test_each_file_is_stored_once_in_well_under_its_parquet_size(synthetic_root, windows, both_caches):
    _, _, files = both_caches
    parquet = stored = 0
    for kind, folder, column in (("eeg", "train_eegs", "eeg_id"), ("kaggle", "train_spectrograms", "spectrogram_id")):
        parquet += sum((synthetic_root / folder / f"{int(f)}.parquet").stat().st_size for f in windows[column].unique())
        stored += sum(p.stat().st_size for p in files[kind].path.glob("part-*"))
    assert stored <= 0.6 * parquet, (stored, parquet)
    # The windows overlap (about 5 per eeg_id here): finished full-size tiles of them all (float16, 4 channels,
    # 2 kinds) would take more than twice the per-file cache.
    assert len(windows) * FULL[0] * FULL[1] * 4 * 2 * 2 > 2 * stored


def test_auto_picks_the_per_file_cache_where_finished_tiles_would_be_larger(synthetic_root, windows):
    cfg = compose(["data=kaggle", f"data.root={synthetic_root}", "data.sampling=random"])
    eeg = sum((synthetic_root / "train_eegs" / f"{int(f)}.parquet").stat().st_size for f in windows.eeg_id.unique())
    spec = sum((synthetic_root / "train_spectrograms" / f"{int(f)}.parquet").stat().st_size for f in windows.spectrogram_id.unique())
    for tile in ([128, 256], [16, 32]):
        finished = len(windows) * tile[0] * tile[1] * 4 * 2 * 2  # float16, 4 channels, 2 kinds
        expected = "files" if finished > (eeg + spec) / 2 else "tiles"
        assert cache_mode(compose(["data=kaggle", f"data.root={synthetic_root}", f"input.tile=[{tile[0]},{tile[1]}]"]),
                          synthetic_root, "train", windows) == expected
    assert cache_mode(cfg, synthetic_root, "train", windows) == "files"  # full tiles of every window: the larger
    assert cache_mode(compose(["data=kaggle", f"data.root={synthetic_root}", "data.cache=tiles"]), synthetic_root, "train",
                      windows) == "tiles"
    with pytest.raises(Exception, match="data.eeg_spectrograms"):
        cache_mode(compose(["data=kaggle", f"data.root={synthetic_root}", "data.cache=files", "data.eeg_spectrograms=x.npy"]),
                   synthetic_root, "train", windows)


def test_a_bad_file_is_named_or_its_windows_left_out_and_a_killed_build_keeps_its_parts(synthetic_root, windows, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    bad_id = int(windows.eeg_id.iloc[0])
    (root / "train_eegs" / f"{bad_id}.parquet").write_bytes(b"not a parquet file")
    options = FeatureOptions(tile=(16, 32), cache_dir=str(tmp_path / "cache"), workers=1, progress=False)
    with pytest.raises(DataError, match=f"{bad_id}.parquet"):
        build_window_caches(root, "train", ("eeg",), windows, options)
    skipped = build_window_caches(root, "train", ("eeg",), windows, options, bad_files="skip")["eeg"]
    assert skipped.bad_items().tolist() == np.flatnonzero(windows.eeg_id.to_numpy() == bad_id).tolist()
    # A window past its file's end is named too.
    late = windows[windows.eeg_id != bad_id].iloc[[0]].assign(eeg_offset=10_000.0)
    with pytest.raises(DataError, match=f"{int(late.eeg_id.iloc[0])}.parquet: .* rows, but a labelled window needs"):
        build_window_caches(root, "train", ("eeg",), late, options)
    # As if killed before one part was committed: only that part's files are read again, the others are kept.
    folder = skipped.path
    parts = sorted(folder.glob("part-*.parquet"))
    assert len(parts) > 1
    kept = {p: p.stat().st_mtime_ns for p in parts[1:]}
    lost = set(pd.read_parquet(parts[0]).file_id)
    parts[0].unlink()
    again = build_window_caches(root, "train", ("eeg",), windows, options, bad_files="skip")["eeg"]
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())
    new = set(pd.concat([pd.read_parquet(p) for p in set(folder.glob("part-*.parquet")) - set(kept)]).file_id)
    assert new == lost | {bad_id}  # the lost part's files, and the bad file read again
    rows = np.flatnonzero(windows.eeg_id.isin(lost - {bad_id}).to_numpy())[:4]
    np.testing.assert_array_equal(again.features[rows], skipped.features[rows])


READER = """
import sys, numpy as np
from hms.features.cache import FeatureOptions
from hms.dataset import load_train
from hms.inputs import train_items
from hms.features.files import WindowTiles, build_window_caches
root, store = sys.argv[1], sys.argv[2]
samples, labelled = load_train(root)
items = train_items(samples, labelled, "random")
items = items[items.eeg_id.isin(samples.eeg_id.iloc[:12])].reset_index(drop=True)
caches = build_window_caches(root, "train", ("kaggle", "eeg"), items, FeatureOptions(tile=(16, 32), cache_dir=store, workers=1,
                             progress=False))
rows = np.arange(0, len(items), 7)
print(float(sum(np.abs(c.features[rows]).astype(np.float64).sum() for c in caches.values())))
"""


def test_two_processes_building_and_reading_one_fresh_cache_at_once_get_the_same_tiles(synthetic_root, windows, tmp_path):
    store = tmp_path / "shared-cache"
    procs = [subprocess.Popen([sys.executable, "-c", READER, str(synthetic_root), str(store)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    caches = build_window_caches(synthetic_root, "train", ("kaggle", "eeg"), windows,
                                 FeatureOptions(tile=(16, 32), cache_dir=str(store), workers=1, progress=False))
    rows = np.arange(0, len(windows), 7)
    expected = float(sum(np.abs(c.features[rows]).astype(np.float64).sum() for c in caches.values()))
    assert [float(out) for out, _ in outputs] == [expected, expected]
    assert len({c.path for c in caches.values()}) == 2 and all(Path(c.path).parent == store for c in caches.values())
