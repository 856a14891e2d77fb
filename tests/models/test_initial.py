"""`backbone.init=portable` (issue 25): one seed gives the same initial weights under TensorFlow and JAX, drawn from
each initializer's own distribution."""

import json
import subprocess
import sys

import numpy as np
import pytest

from ..helpers import REPO

pytestmark = pytest.mark.slow  # builds three backbones in a fresh process per backend

BUILD = """
import json, sys
import numpy as np
from hms import backends
from hms.config import compose
backend, out = sys.argv[1], sys.argv[2]
backends.select(compose([f"trainer.backend={backend}"]).trainer)
import keras
from hms.models.initial import portable_weights
from hms.representations import model_for
signal = ["input=eeg1d", "input.signal.rate=20", "input.signal.high=8"]
arrays, report = {}, {}
for name, extra in [("eeg1d_cnn", signal), ("eeg1d_gru", signal), ("efficientnet_b0", ["backbone.source=keras", "input.tile=[16,32]"])]:
    keras.utils.set_random_seed(0)
    model = model_for(compose([f"backbone={name}", *extra]))
    for v in model.weights:
        arrays[f"{name}:backend:{v.path}"] = keras.ops.convert_to_numpy(v)
    report[name] = portable_weights(model, 7)
    for v in model.weights:
        arrays[f"{name}:portable:{v.path}"] = keras.ops.convert_to_numpy(v)
np.savez(out, **arrays)
print(json.dumps(report))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    folder = tmp_path_factory.mktemp("initial")
    out = {}
    for backend in ("tensorflow", "jax"):
        done = subprocess.run([sys.executable, "-c", BUILD, backend, str(folder / f"{backend}.npz")], capture_output=True,
                              text=True, cwd=REPO, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        out[backend] = (json.loads(done.stdout.strip().splitlines()[-1]), dict(np.load(folder / f"{backend}.npz")))
    return out


def test_one_seed_gives_the_same_initial_weights_under_both_backends(built):
    (tf_report, tf), (jax_report, jx) = built["tensorflow"], built["jax"]
    assert set(tf) == set(jx)  # the same variables, by path
    for name in ("eeg1d_cnn", "eeg1d_gru", "efficientnet_b0"):
        assert tf_report[name] == jax_report[name] and tf_report[name]["unknown"] == [], (name, tf_report[name])
        assert tf_report[name]["drawn"] > 0
        portable = [k for k in tf if k.startswith(f"{name}:portable:")]
        for key in portable:
            np.testing.assert_array_equal(tf[key], jx[key], err_msg=key)
        # Keras' own draws differ between the backends: what the portable draw removes.
        differ = [k for k in portable if not np.array_equal(tf[k.replace(":portable:", ":backend:")], jx[k.replace(":portable:", ":backend:")])]
        assert len(differ) >= tf_report[name]["drawn"] // 2, (name, len(differ))
        # Deterministic initial values (zeros, ones, the zero residual scales hms sets) are left as built.
        for key in portable:
            built_value = tf[key.replace(":portable:", ":backend:")]
            if np.all(built_value == built_value.flat[0]):
                np.testing.assert_array_equal(tf[key], built_value, err_msg=key)


def test_each_draw_has_its_initializers_distribution():
    """Independent of the code: the formulas of Glorot (2010), He (2015) and Saxe (2014) for each shape."""
    import keras

    from hms.models.initial import draw

    rng = np.random.default_rng(0)
    fan_in, fan_out = 300, 200
    glorot = draw(keras.initializers.GlorotUniform(), (fan_in, fan_out), rng)
    limit = np.sqrt(6 / (fan_in + fan_out))
    assert np.abs(glorot).max() <= limit and glorot.std() == pytest.approx(limit / np.sqrt(3), rel=0.02)
    he = draw(keras.initializers.VarianceScaling(2.0, "fan_out", "truncated_normal"), (3, 3, 32, 64), rng)  # EfficientNet's conv
    assert he.std() == pytest.approx(np.sqrt(2 / (3 * 3 * 64)), rel=0.03)  # the truncation's shrink undone
    assert np.abs(he).max() <= 2 * np.sqrt(2 / (3 * 3 * 64)) / 0.87962566103423978
    normal = draw(keras.initializers.RandomNormal(0.5, 0.1), (20000,), rng)
    assert normal.mean() == pytest.approx(0.5, abs=0.005) and normal.std() == pytest.approx(0.1, rel=0.02)
    q = draw(keras.initializers.Orthogonal(), (64, 192), rng)  # a GRU's recurrent kernel: orthonormal rows
    np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-10)
    assert draw(keras.initializers.Zeros(), (3,), rng) is None
