"""Learning-rate schedules of the `schedule` group: step (epoch, lr) pairs, or cosine with warm-up."""

from __future__ import annotations

import math


def lr_at(schedule, epoch: int, epochs: int) -> float:
    """The learning rate of `epoch` (0-based) in a run of `epochs`."""
    if schedule.name == "step":
        return float([lr for start, lr in schedule.steps if start <= epoch][-1])
    warmup = schedule.warmup_epochs
    if epoch < warmup:
        return float(schedule.lr * (epoch + 1) / (warmup + 1))
    progress = (epoch - warmup) / max(1, epochs - warmup - 1)
    return float(schedule.min_lr + 0.5 * (schedule.lr - schedule.min_lr) * (1 + math.cos(math.pi * min(1.0, progress))))
