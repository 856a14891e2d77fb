"""input=eeg_layer: the EEG spectrogram layer in the model gives the tile path's tiles (the tile cache's numbers)
from the raw pairs of the per-file cache, within 1e-3 at float32; a window one sample off does not."""

import numpy as np
import pytest

from hms.dataset import load_train
from hms.features.cache import FeatureOptions
from hms.features.files import WindowTiles, build_files
from hms.features.signals import PairWindows
from hms.inputs import train_items
from hms.representations.eeg_layer import eeg_spectrogram_layer

RATE = 200


@pytest.fixture(scope="module")
def windows(synthetic_root, tmp_path_factory):
    """Labelled windows of 4 eeg_ids and their per-file EEG cache."""
    samples, labelled = load_train(synthetic_root)
    items = train_items(samples, labelled, "random")
    items = items[items.eeg_id.isin(samples.eeg_id.iloc[:4])].reset_index(drop=True).iloc[:6]
    options = FeatureOptions(cache_dir=str(tmp_path_factory.mktemp("cache")), workers=1, progress=False)
    files = build_files(synthetic_root, "train", "eeg", items.eeg_id.to_numpy(), options)
    return files, items.eeg_id.to_numpy(), items.eeg_offset.to_numpy(np.float64)


@pytest.mark.parametrize("tile", [(128, 256), (32, 64), (16, 32)])
def test_the_layer_gives_the_tile_paths_tiles_and_a_one_sample_shift_is_caught(windows, tile):
    import keras

    files, file_ids, offsets = windows
    expected = WindowTiles(files, file_ids, offsets, tile)[np.arange(len(file_ids))]  # the tile path, float16-rounded
    layer = eeg_spectrogram_layer(tile)
    pairs = PairWindows(files, file_ids, offsets)[np.arange(len(file_ids))]
    got = keras.ops.convert_to_numpy(layer(pairs))
    assert got.shape == expected.shape == (len(file_ids), *tile, 4) and got.dtype == np.float32
    assert np.abs(got - expected).max() <= 1e-3
    # The same windows read one sample later: the check must see it.
    shifted = PairWindows(files, file_ids, offsets + 1 / RATE)[np.arange(len(file_ids))]
    assert np.abs(keras.ops.convert_to_numpy(layer(shifted)) - expected).max() > 1e-3


def test_pairs_are_the_chain_differences_of_the_parquet_window(synthetic_root, windows):
    from hms.constants import EEG_COLUMNS
    from hms.dataset import read_eeg

    files, file_ids, offsets = windows
    got = PairWindows(files, file_ids, offsets)[[2]][0]
    eeg = read_eeg(synthetic_root / "train_eegs" / f"{int(file_ids[2])}.parquet")
    first = int(round(offsets[2] * RATE))
    window = np.asarray(eeg[first:first + 10_000], np.float32)
    column = {name: window[:, i] for i, name in enumerate(EEG_COLUMNS)}
    # The seed's first chain's first pair (LL: Fp1-F7) and the right parasagittal chain's last (P4-O2), NaN filled
    # by the pair's mean as the spectrogram path fills them.
    for k, (a, b) in ((0, ("Fp1", "F7")), (15, ("P4", "O2"))):
        pair = column[a] - column[b]
        expected = np.where(np.isnan(pair), np.nanmean(pair) if np.isfinite(pair).any() else 0.0, pair)
        np.testing.assert_allclose(got[:, k], expected, atol=1e-4)
    assert got.shape == (10_000, 16) and np.isfinite(got).all()
