from pathlib import Path

import numpy as np
import pytest

from hms.config import compose
from hms.dataset import DataError, load_test, load_train, read_eeg, read_spectrogram
from hms.features import eeg_spectrogram, kaggle_tiles
from hms.features.cache import TODO, build_cache, open_cache
from hms.inputs import build_features, feature_kinds, train_items

TILE = (32, 64)


@pytest.fixture(scope="module")
def items(synthetic_root):
    samples, _ = load_train(synthetic_root)
    return samples[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]]


def test_cache_holds_the_same_tiles_as_direct_computation(synthetic_root, items, tmp_path):
    cache = build_cache(synthetic_root, "train", "kaggle", items, tile=(128, 256), cache_dir=tmp_path, workers=2, progress=False)
    assert cache.complete and cache.features.shape == (len(items), 128, 256, 4) and cache.features.dtype == np.float16
    row = items.iloc[5]
    expected = kaggle_tiles(read_spectrogram(synthetic_root / "train_spectrograms" / f"{int(row.spectrogram_id)}.parquet"), row.spec_offset)
    np.testing.assert_allclose(cache.features[5].astype(np.float32), expected, atol=2e-2, rtol=1e-2)
    eeg = build_cache(synthetic_root, "train", "eeg", items.iloc[:4], tile=(128, 256), cache_dir=tmp_path, workers=1, progress=False)
    first = items.iloc[0]
    window = read_eeg(synthetic_root / "train_eegs" / f"{int(first.eeg_id)}.parquet")[int(first.eeg_offset * 200):][:10_000]
    np.testing.assert_allclose(eeg.features[0].astype(np.float32), eeg_spectrogram(window), atol=2e-3)


def test_small_tiles_and_reopen_without_rebuild(synthetic_root, items, tmp_path):
    cache = build_cache(synthetic_root, "train", "eeg", items, tile=TILE, cache_dir=tmp_path, workers=1, progress=False)
    assert cache.features.shape == (len(items), *TILE, 4)
    stamp = (cache.path / "features.npy").stat().st_mtime_ns
    again = build_cache(synthetic_root, "train", "eeg", items, tile=TILE, cache_dir=tmp_path, progress=False)
    assert again.path == cache.path and (again.path / "features.npy").stat().st_mtime_ns == stamp
    other = build_cache(synthetic_root, "train", "eeg", items, tile=(16, 32), cache_dir=tmp_path, workers=1, progress=False)
    assert other.path != cache.path  # feature parameters are part of the key


def test_interrupted_build_resumes_and_keeps_what_was_computed(synthetic_root, items, tmp_path):
    cache = build_cache(synthetic_root, "train", "kaggle", items, tile=TILE, cache_dir=tmp_path, workers=1, progress=False)
    expected = np.array(cache.features)
    features = np.load(cache.path / "features.npy", mmap_mode="r+")
    status = np.load(cache.path / "status.npy", mmap_mode="r+")
    status[10:] = TODO  # as if the build had been killed after 10 items
    features[10:] = 0
    features[3] = 7  # a finished item: a resumed build must not recompute it
    features.flush(), status.flush()
    resumed = build_cache(synthetic_root, "train", "kaggle", items, tile=TILE, cache_dir=tmp_path, workers=2, progress=False)
    assert resumed.complete
    np.testing.assert_array_equal(resumed.features[10:], expected[10:])
    assert (resumed.features[3] == 7).all()


def test_bad_file_fails_naming_it_or_is_skipped_and_reported(synthetic_root, items, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    broken = items.eeg_id.iloc[2]
    path = root / "train_eegs" / f"{broken}.parquet"
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(DataError, match=f"{broken}.parquet: unreadable parquet"):
        build_cache(root, "train", "eeg", items, tile=TILE, cache_dir=tmp_path / "c1", workers=1, progress=False)
    partial = open_cache(next((tmp_path / "c1").iterdir()))
    assert not partial.complete
    cache = build_cache(root, "train", "eeg", items, tile=TILE, cache_dir=tmp_path / "c2", workers=2, bad_files="skip", progress=False)
    assert cache.complete and cache.bad_items().tolist() == [2]
    assert f"{broken}.parquet: unreadable parquet" in capsys.readouterr().err  # a warning: stderr


def test_precomputed_eeg_spectrograms_are_used_and_lacking_ids_reported(synthetic_root, items, tmp_path, capsys):
    rng = np.random.default_rng(0)
    given = {int(i): rng.normal(size=(128, 256, 4)).astype(np.float32) for i in items.eeg_id[:-2]}
    np.save(tmp_path / "eeg_specs.npy", given)
    cache = build_cache(synthetic_root, "train", "eeg", items, tile=(128, 256), cache_dir=tmp_path / "c",
                        workers=1, precomputed=str(tmp_path / "eeg_specs.npy"), progress=False)
    assert cache.complete
    # The file's channels are in the public notebook's chain order (LL, LP, RL, RP); the cache holds Kaggle's.
    np.testing.assert_allclose(cache.features[0].astype(np.float32), given[int(items.eeg_id.iloc[0])][..., [0, 2, 1, 3]], atol=1e-2)
    assert "lacks 2 of" in capsys.readouterr().out
    np.save(tmp_path / "bad.npy", {int(items.eeg_id.iloc[0]): np.zeros((128, 128, 4))})
    with pytest.raises(DataError, match=r"bad.npy: eeg_id \d+ has shape \(128, 128, 4\)"):
        build_cache(synthetic_root, "train", "eeg", items, cache_dir=tmp_path / "d", precomputed=str(tmp_path / "bad.npy"), progress=False)


def test_public_precomputed_file_in_the_notebooks_order_gives_the_computed_tiles(synthetic_root, items, tmp_path):
    import pandas as pd

    from hms.features.notebook import librosa_eeg_spectrogram

    first = items.iloc[:2]
    given = {}
    for row in first.itertuples():  # what the public notebook would have saved: its own chain order
        frame = pd.read_parquet(synthetic_root / "train_eegs" / f"{row.eeg_id}.parquet")
        start = int(row.eeg_offset * 200)
        given[int(row.eeg_id)] = librosa_eeg_spectrogram(frame.iloc[start:start + 10_000], order=[0, 1, 2, 3])
    np.save(tmp_path / "eeg_specs.npy", given)
    public = build_cache(synthetic_root, "train", "eeg", first, tile=(128, 256), cache_dir=tmp_path / "p", workers=1,
                         precomputed=str(tmp_path / "eeg_specs.npy"), progress=False)
    computed = build_cache(synthetic_root, "train", "eeg", first, tile=(128, 256), cache_dir=tmp_path / "c", workers=1,
                           progress=False)
    np.testing.assert_allclose(public.features[:].astype(np.float32), computed.features[:].astype(np.float32), atol=3e-3)


def test_input_mix_selects_kinds_and_random_sampling_caches_every_window(synthetic_root, tmp_path):
    assert feature_kinds("both") == ("kaggle", "eeg") and feature_kinds("eeg") == ("eeg",)
    cfg = compose(["input=kaggle", "input.tile=[16,32]", f"data.cache_dir={tmp_path}", "data.sampling=random", "data.workers=1"])
    samples, windows = load_train(synthetic_root)
    caches = build_features(cfg, synthetic_root, "train", train_items(samples, windows, "random"), progress=False)
    assert list(caches) == ["kaggle"] and len(caches["kaggle"].index) == len(windows)
    test = build_features(cfg, synthetic_root, "test", load_test(synthetic_root), progress=False)
    assert test["kaggle"].complete and len(test["kaggle"].index) == 8


def _rewrite_eeg(path) -> None:
    """Replace an EEG file by another recording of the same shape: its own rows in reverse order."""
    import pandas as pd

    frame = pd.read_parquet(path)
    frame.iloc[::-1].reset_index(drop=True).to_parquet(path, index=False)


def test_item01_a_replaced_data_file_is_read_again(synthetic_root, items, tmp_path):
    """Issue 14, item 1: the cache key covers each data file the items read (size and mtime in ns)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    first = build_cache(root, "train", "eeg", items.iloc[:6], tile=TILE, cache_dir=tmp_path / "c", workers=1, progress=False)
    before = np.array(first.features[0], np.float32)
    _rewrite_eeg(root / "train_eegs" / f"{int(items.eeg_id.iloc[0])}.parquet")  # same columns and size, other values
    second = build_cache(root, "train", "eeg", items.iloc[:6], tile=TILE, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert second.path != first.path
    window = read_eeg(root / "train_eegs" / f"{int(items.eeg_id.iloc[0])}.parquet")[int(items.eeg_offset.iloc[0] * 200):][:10_000]
    import cv2

    expected = np.stack([cv2.resize(t, (TILE[1], TILE[0]), interpolation=cv2.INTER_AREA) for t in eeg_spectrogram(window)[None]])[0]
    np.testing.assert_allclose(second.features[0].astype(np.float32), expected, atol=2e-2)
    assert not np.allclose(second.features[0].astype(np.float32), before, atol=2e-2)
    # The other files are unchanged, and so are their tiles.
    np.testing.assert_array_equal(second.features[1:], first.features[1:])


def test_item02_a_bad_file_fails_again_while_bad_and_is_used_once_repaired(synthetic_root, items, tmp_path, capsys):
    """Issue 14, item 2: a file's bad status is re-checked on every run, not remembered."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    path = root / "train_eegs" / f"{int(items.eeg_id.iloc[1])}.parquet"
    good = path.read_bytes()
    path.write_bytes(good[:3000])
    options = dict(tile=TILE, cache_dir=tmp_path / "c", workers=1, progress=False)
    for _ in range(2):  # the second run fails again: nothing remembered the file as "known bad"
        with pytest.raises(DataError, match=f"{path.name}: unreadable parquet"):
            build_cache(root, "train", "eeg", items.iloc[:4], **options)
    skipped = build_cache(root, "train", "eeg", items.iloc[:4], bad_files="skip", **options)
    assert skipped.bad_items().tolist() == [1]
    again = build_cache(root, "train", "eeg", items.iloc[:4], bad_files="skip", **options)  # reported again, not silently
    assert again.bad_items().tolist() == [1] and capsys.readouterr().err.count(f"{path.name}: unreadable parquet") == 2
    path.write_bytes(good)  # repaired
    repaired = build_cache(root, "train", "eeg", items.iloc[:4], **options)
    assert repaired.complete and not len(repaired.bad_items())


@pytest.mark.slow
def test_item11_two_processes_create_the_same_fresh_cache_at_once(synthetic_root, items, tmp_path):
    """Issue 14, item 11: each writer stages its own folder and renames it into place; both runs finish."""
    import subprocess
    import sys

    import time

    items.iloc[:6].to_parquet(tmp_path / "items.parquet")
    start = time.time() + 10  # both processes import first, then start building at the same moment
    script = ("import sys, time, pandas as pd; from hms.features.cache import build_cache; "
              f"time.sleep(max(0, {start} - time.time())); "
              f"c = build_cache({str(synthetic_root)!r}, 'train', 'kaggle', pd.read_parquet({str(tmp_path / 'items.parquet')!r}), "
              f"tile={TILE!r}, cache_dir={str(tmp_path / 'cache')!r}, workers=1, progress=False); "
              "print(c.path, c.complete)")
    workers = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    outputs = [w.communicate(timeout=300) for w in workers]
    assert all(w.returncode == 0 for w in workers), [o[1][-2000:] for o in outputs]
    paths = {o[0].split()[0] for o in outputs}
    assert len(paths) == 1 and all(o[0].split()[1] == "True" for o in outputs)
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [Path(paths.pop()).name]  # no staging folder left behind
    reference = build_cache(synthetic_root, "train", "kaggle", items.iloc[:6], tile=TILE, cache_dir=tmp_path / "ref",
                            workers=1, progress=False)
    np.testing.assert_array_equal(open_cache(next((tmp_path / "cache").iterdir())).features, reference.features)


def test_item16_a_precomputed_file_cannot_run_code(tmp_path, items, synthetic_root):
    """Issue 14, item 16: data.eeg_spectrograms is unpickled with only NumPy arrays allowed."""
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    np.save(tmp_path / "evil.npy", np.array({int(items.eeg_id.iloc[0]): Payload()}, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="evil.npy: .*refusing to load"):
        build_cache(synthetic_root, "train", "eeg", items.iloc[:2], cache_dir=tmp_path / "c", precomputed=str(tmp_path / "evil.npy"),
                    progress=False)
    assert not (tmp_path / "ran").exists()


def _write_fixed_size(path, frame) -> None:
    """A parquet file whose byte size does not depend on its values: no compression, dictionary or statistics."""
    frame.to_parquet(path, index=False, compression=None, use_dictionary=False, write_statistics=False)


def test_item06_a_file_rewritten_in_place_with_the_same_size_is_read_again(synthetic_root, items, tmp_path):
    """Issue 28, item 6: a corrected value in a data file of the same byte size. The key stamps the modification
    time beside the size; a key of sizes alone would reuse the stale tiles (planted, this test fails)."""
    import os
    import shutil

    import pandas as pd

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    path = root / "train_eegs" / f"{int(items.eeg_id.iloc[0])}.parquet"
    frame = pd.read_parquet(path)
    _write_fixed_size(path, frame)
    first = build_cache(root, "train", "eeg", items.iloc[:3], tile=TILE, cache_dir=tmp_path / "c", workers=1, progress=False)
    before, size, stat = np.array(first.features[0], np.float32), path.stat().st_size, path.stat()
    _write_fixed_size(path, frame.iloc[::-1].reset_index(drop=True))  # other values in place, the same byte size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))  # as a later write's clock would
    assert path.stat().st_size == size
    second = build_cache(root, "train", "eeg", items.iloc[:3], tile=TILE, cache_dir=tmp_path / "c", workers=1, progress=False)
    assert second.path != first.path
    assert not np.allclose(np.array(second.features[0], np.float32), before, atol=1e-3)
    np.testing.assert_array_equal(second.features[1:], first.features[1:])


FULL_DISK = """
import resource, signal, sys
from pathlib import Path
import pandas as pd
from hms.dataset import load_train
from hms.features.cache import build_cache
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit, a write fails with EFBIG instead of killing
samples, _ = load_train(sys.argv[1])
items = samples[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]]
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))  # no file over 64 KiB from here on
build_cache(sys.argv[1], "train", "eeg", items, tile=(32, 64), cache_dir=sys.argv[2], workers=1, progress=False)
"""


@pytest.mark.slow  # a build in a process of its own
def test_item03_a_cache_that_does_not_fit_is_a_clear_error_and_leaves_nothing_partial(synthetic_root, items, tmp_path):
    """Issue 28, item 3, with a file-size limit (RLIMIT_FSIZE, 64 KiB) rather than a small filesystem (this machine
    cannot mount one for the suite): the cache's features (40 items of 32x64x4 float16, 655,360 bytes) do not fit.
    The build stops with an error naming the cache and the bytes it needs; no staging folder or cache is left for a
    later run to trust; the same build without the limit then succeeds."""
    import subprocess
    import sys

    cache_dir = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(synthetic_root), str(cache_dir)], capture_output=True, text=True)
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("hms.features.cache.DiskFull: ") and str(cache_dir / "train-eeg-32x64-") in last, done.stderr[-2000:]
    assert f"it needs {len(items) * 32 * 64 * 4 * 2:,} bytes" in last and "File too large" in last
    assert not list(cache_dir.iterdir())  # no staging folder, no cache
    cache = build_cache(synthetic_root, "train", "eeg", items, tile=(32, 64), cache_dir=cache_dir, workers=1, progress=False)
    assert cache.complete
