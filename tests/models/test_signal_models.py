"""Each backbone family trains for real under mixed precision and a 2-replica MirroredStrategy: the raw-EEG (1D)
backbones and an EfficientNet on tiles (B0, tiny tiles)."""

import json
import subprocess
import sys

import pytest

from ..helpers import REPO

pytestmark = pytest.mark.slow  # trains real models in a fresh process (logical CPU devices are set before TF starts)

SCRIPT = """
import json, os
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras
import numpy as np
from hms.config import compose
from hms.cv import _compile, model_dtypes
from hms.devices import configure, precision_policy
from hms.representations import model_for
out, devices = {}, None
common = ["trainer.cpu_devices=2", "trainer.strategy=mirrored", "trainer.precision=mixed_float16"]
signal = ["input=eeg1d", "augmentation=signal", "input.signal.rate=20", "input.signal.high=8"]
for name in ("eeg1d_cnn", "eeg1d_gru", "eeg1d_wavenet", "efficientnet_b0"):
    tiles = name.startswith("efficientnet")
    cfg = compose([f"backbone={name}", *common, *(["input.tile=[16,32]", "augmentation=hemisphere"] if tiles else signal)])
    devices = devices or configure(cfg.trainer)  # one strategy per process, as a run has
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 16, 32, 8) if tiles else (16, 1000, 16)).astype(np.float32)
    y = rng.dirichlet(np.ones(6), 16).astype(np.float32)
    with precision_policy(devices.precision):
        with devices.strategy.scope():
            model = model_for(cfg, 2 if tiles else 1, steps_per_epoch=2)
            _compile(model, 1e-3)
        before = [w.copy() for w in model.get_weights()]
        history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # 2 steps, each split over the 2 replicas
        p = keras.ops.convert_to_numpy(model(x, training=False))  # eager: no prediction graph to trace
    out[name] = {"replicas": devices.strategy.num_replicas_in_sync, "dtypes": model_dtypes(model),
                 "loss": history.history["loss"], "changed": sum(not np.array_equal(a, b) for a, b in zip(before, model.get_weights())),
                 "weights": len(before), "rows": p.sum(axis=1).tolist(), "input": list(model.input_shape)}
print(json.dumps(out))
"""


def test_each_1d_backbone_and_b0_train_under_mixed_precision_on_two_replicas():
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=REPO, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) == {"eeg1d_cnn", "eeg1d_gru", "eeg1d_wavenet", "efficientnet_b0"}
    for name, r in result.items():
        assert r["replicas"] == 2, name
        assert r["dtypes"].startswith("compute float16") and r["dtypes"].endswith("output float32"), (name, r["dtypes"])
        # 50 s at input.signal.rate=20; tiles: the Kaggle and EEG spectrograms' 4 tiles each
        assert r["input"] == ([None, 16, 32, 8] if name == "efficientnet_b0" else [None, 1000, 16]), name
        assert all(v == v and v < 10 for v in r["loss"]), (name, r["loss"])  # finite
        assert r["changed"] > r["weights"] // 2, name  # trained, not a frozen graph
        assert all(abs(s - 1) < 1e-3 for s in r["rows"]), name  # a float32 softmax
