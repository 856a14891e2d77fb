"""The registry: every input is an entry; an unknown one, or one the backbone cannot take, is refused by name with
the registered ones listed; eeg_image lays the signal out as the module says."""

import re

import numpy as np
import pytest

from hms.config import ConfigError, compose
from hms.representations import list_representations, representation_for

BUILT_IN = {"both", "kaggle", "eeg", "eeg1d", "eeg_layer", "eeg_image"}


def test_every_input_file_names_a_registered_representation():
    from hms.config import CONF_DIR

    files = {p.stem for p in (CONF_DIR / "input").glob("*.yaml")}
    assert files == BUILT_IN and BUILT_IN <= set(list_representations())
    for name in files:
        backbone = "eeg1d_cnn" if name == "eeg1d" else "efficientnet_b0"
        augmentation = "signal" if name in ("eeg1d", "eeg_image") else "hemisphere"
        cfg = compose([f"input={name}", f"backbone={backbone}", f"augmentation={augmentation}"])
        assert representation_for(cfg).name == name


@pytest.mark.parametrize("overrides,message", [
    (["input.mix=audio"], "input.mix='audio' is not a registered representation; registered: both, eeg, eeg1d, eeg_image, eeg_layer, kaggle"),
    (["input=eeg_layer", "backbone=eeg1d_cnn"], "backbone=eeg1d_cnn (eeg1d) does not take input.mix=eeg_layer"),
    (["input=eeg_image", "backbone=eeg1d_gru", "augmentation=signal"], "eeg1d_gru takes eeg1d"),
    (["input=eeg1d", "backbone=efficientnet_b2"], "efficientnet_b2 takes both, eeg, eeg_image, eeg_layer, kaggle"),
    (["input=eeg_layer", "+input.options.kaggel=false"], "input.options.kaggel: input=eeg_layer takes only input.options.kaggle"),
    (["input=eeg_layer", "augmentation=flip_dropout"], "augmentation.coarse_dropout=0.5 does not apply to input.mix=eeg_layer"),
    (["input=eeg_image", "augmentation=signal", "input.options.segment_seconds=7"], "must divide the 50 s window"),
    (["input=eeg_image", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8", "input.options.segment_seconds=1"],
     "narrower than the 32 pixels"),
])
def test_a_representation_the_config_cannot_use_is_refused_by_name(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose(overrides)


def test_eeg_image_stacks_segments_of_the_16_pairs_top_to_bottom():
    import keras

    from hms.representations.eeg_image import _layer_class

    samples, pairs, segments = 2500, 16, 5
    x = np.random.default_rng(0).normal(size=(2, samples, pairs)).astype(np.float32)
    image = keras.ops.convert_to_numpy(_layer_class()(segments, positions=True)(x))
    length = samples // segments
    assert image.shape == (2, segments * pairs, length, 3)
    for segment, pair, column in ((0, 0, 0), (0, 15, 499), (3, 7, 123), (4, 15, 499)):
        # row segment * 16 + pair, column c: the pair's sample segment * 500 + c
        assert image[1, segment * pairs + pair, column, 0] == x[1, segment * length + column, pair]
        assert image[1, segment * pairs + pair, column, 2] == x[1, segment * length + column, pair]
    np.testing.assert_allclose(image[0, :, 0, 1], np.linspace(-1, 1, segments * pairs), atol=1e-6)  # the row's place
    plain = keras.ops.convert_to_numpy(_layer_class()(segments, positions=False)(x))
    assert (plain[..., 1] == plain[..., 0]).all()
