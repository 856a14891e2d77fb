"""Learning-rate schedules of the `schedule` group, written as fractions of the run.

A schedule is a function of progress, the share of the run's optimiser steps already taken, so one
config decays at the same moments for 4, 8 or 40 epochs. The LR is set before every step (not once
per epoch): a 3-epoch run still decays where its fractions say, and at 4 epochs the notebook's
`[[0, 1e-3], [0.5, 1e-4], [0.75, 1e-5]]` changes exactly at the starts of epochs 2 and 3.
"""

from __future__ import annotations

import math


def lr_at(schedule, step: int, total_steps: int) -> float:
    """The learning rate of optimiser `step` (0-based) in a run of `total_steps` steps.

    step: `schedule.steps` are [fraction, lr] pairs; a pair applies from `fraction * total_steps` on.
    cosine: linear warm-up over the first `schedule.warmup` of the run, then cosine from `lr` to
    `min_lr` at the last step."""
    total_steps = max(1, int(total_steps))
    if schedule.name == "step":
        # Compare in steps (exact integers at epoch boundaries), not in float fractions.
        return float([lr for start, lr in schedule.steps if start * total_steps <= step + 1e-9][-1])
    warmup = schedule.warmup * total_steps
    if step < warmup:
        return float(schedule.lr * (step + 1) / (math.floor(warmup) + 1))
    progress = (step - math.ceil(warmup)) / max(1, total_steps - math.ceil(warmup) - 1)
    return float(schedule.min_lr + 0.5 * (schedule.lr - schedule.min_lr) * (1 + math.cos(math.pi * min(1.0, progress))))


def epoch_lrs(schedule, epochs: int, steps_per_epoch: int) -> list[float]:
    """The LR each epoch starts with (for reading a schedule at a glance, and in tests)."""
    return [lr_at(schedule, e * steps_per_epoch, epochs * steps_per_epoch) for e in range(epochs)]


def step_callback(schedule, epochs: int, steps_per_epoch: int, scale: float = 1.0):
    """A Keras callback that sets the optimiser's LR before every training step from `schedule`."""
    import keras

    total = epochs * steps_per_epoch

    class StepLR(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_begin(self, batch, logs=None):
            step = self.epoch * steps_per_epoch + batch  # past `total`, lr_at keeps the last planned LR
            self.model.optimizer.learning_rate.assign(scale * lr_at(schedule, step, total))

    return StepLR()
