"""Precision policy and distribution strategy from `trainer.precision` and `trainer.strategy`."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class Devices:
    """What a run trains on: the strategy, its replica count and the Keras dtype policy."""

    strategy: object
    replicas: int
    precision: str
    description: str


def split_cpu(count: int) -> None:
    """Split the CPU into `count` logical devices (a MirroredStrategy on a machine with no GPU);
    must run before TensorFlow initialises its devices."""
    import tensorflow as tf

    cpus = tf.config.list_physical_devices("CPU")
    current = tf.config.get_logical_device_configuration(cpus[0])
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as error:
        raise RuntimeError(f"trainer.cpu_devices={count}: TensorFlow already initialised its devices in this process") from error


def _supports_float16(gpus) -> bool:
    import tensorflow as tf

    for gpu in gpus:
        capability = tf.config.experimental.get_device_details(gpu).get("compute_capability", (0, 0))
        if capability < (7, 0):
            return False
    return bool(gpus)


@contextmanager
def precision_policy(name: str):
    """Keras' global dtype policy set to `name` inside the block, and the previous one restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def configure(trainer) -> Devices:
    """The strategy and precision the trainer config asks for (the precision is applied by `precision_policy`)."""
    import tensorflow as tf

    if trainer.cpu_devices and trainer.cpu_devices > 1:
        split_cpu(trainer.cpu_devices)
    gpus = tf.config.list_physical_devices("GPU")
    precision = trainer.precision
    if precision == "auto":
        precision = "mixed_float16" if _supports_float16(gpus) else "float32"
    wanted = trainer.strategy
    if wanted == "auto":
        wanted = "mirrored" if len(gpus) > 1 else "default"
    if wanted == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or [d.name for d in tf.config.list_logical_devices("CPU")]
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        strategy = tf.distribute.get_strategy()
    replicas = strategy.num_replicas_in_sync
    where = f"{len(gpus)} GPU(s)" if gpus else "CPU"
    return Devices(strategy, replicas, precision, f"{type(strategy).__name__} x{replicas} on {where}, {precision}")
