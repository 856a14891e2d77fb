import numpy as np
import pytest
from omegaconf import OmegaConf

from hms.schedule import epoch_lrs, lr_at, step_callback

SEED = OmegaConf.create({"name": "step", "steps": [[0, 1e-3], [0.5, 1e-4], [0.75, 1e-5]]})


@pytest.mark.parametrize("steps_per_epoch", [1, 7, 30])
def test_fraction_steps_are_the_seeds_schedule_at_4_epochs(steps_per_epoch):
    # The notebook: epochs 0-1 at 1e-3, epoch 2 at 1e-4, epoch 3 at 1e-5, constant within each epoch.
    lrs = [lr_at(SEED, s, 4 * steps_per_epoch) for s in range(4 * steps_per_epoch)]
    expected = [1e-3] * (2 * steps_per_epoch) + [1e-4] * steps_per_epoch + [1e-5] * steps_per_epoch
    assert lrs == expected


def test_fraction_steps_scale_with_the_run():
    assert epoch_lrs(SEED, 8, 5) == [1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2
    assert epoch_lrs(SEED, 40, 5) == [1e-3] * 20 + [1e-4] * 10 + [1e-5] * 10
    # 3 epochs of 10 steps: the decays fall inside epochs, at steps 15 and 22.5 (so 23).
    lrs = [lr_at(SEED, s, 30) for s in range(30)]
    assert lrs.index(1e-4) == 15 and lrs.index(1e-5) == 23


def test_cosine_warms_up_over_a_fraction_then_decays_to_min():
    cosine = OmegaConf.create({"name": "cosine", "lr": 1e-3, "warmup": 0.1, "min_lr": 1e-6})
    lrs = [lr_at(cosine, s, 100) for s in range(100)]
    assert lrs[:10] == pytest.approx([1e-3 * (s + 1) / 11 for s in range(10)])  # 10 warm-up steps, rising
    assert lrs[10] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-6)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    # Half-way through the decay the cosine is at the midpoint of lr and min_lr.
    assert lr_at(cosine, 10 + 89 // 2, 100) == pytest.approx(1e-6 + 0.5 * (1e-3 - 1e-6) * (1 + np.cos(np.pi * 44 / 89)))
    # The same config over a run 10 times longer has the same shape.
    assert lr_at(cosine, 500, 1000) == pytest.approx(lr_at(cosine, 50, 100), rel=0.02)


def test_the_callback_sets_the_lr_before_every_step_of_a_real_fit():
    import keras

    x, y = np.zeros((24, 3), np.float32), np.zeros((24, 1), np.float32)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    seen = []

    class Watch(keras.callbacks.Callback):  # runs after the schedule's own on_train_batch_begin
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    # 24 rows in batches of 4: 6 steps per epoch, 3 epochs (18 steps), scaled by 2 replicas. The decays fall
    # inside epochs, at steps 9 and 13.5 (so 14): a schedule set once per epoch would miss both.
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, callbacks=[step_callback(SEED, 3, 6, scale=2.0), Watch()])
    assert seen == pytest.approx([2e-3] * 9 + [2e-4] * 5 + [2e-5] * 4)


def test_past_the_planned_steps_the_lr_stays_at_its_last_value():
    # A fit that runs longer than planned (a resumed or extended run) keeps the last planned LR.
    cosine = OmegaConf.create({"name": "cosine", "lr": 1e-3, "warmup": 0.0, "min_lr": 1e-6})
    assert lr_at(cosine, 99, 100) == pytest.approx(1e-6)
    assert [lr_at(cosine, s, 100) for s in (100, 130, 250)] == pytest.approx([1e-6] * 3)
    assert lr_at(SEED, 40, 18) == pytest.approx(1e-5)
