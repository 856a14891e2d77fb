"""Precision policy and distribution from `trainer.precision` and `trainer.strategy`, on the Keras backend the
process runs (`hms.backends`): TensorFlow's MirroredStrategy, or JAX's `keras.distribution.DataParallel`."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass


@dataclass
class Devices:
    """What a run trains on: the strategy (its `scope()` builds models), its replica count, the Keras dtype policy,
    and under JAX the distribution that shards each batch while the run trains (`running()`)."""

    strategy: object
    replicas: int
    precision: str
    description: str
    distribution: object = None
    process: tuple = (0, 1)  # (this process's index, processes) of a run spread over several (trainer.distributed)

    @property
    def batch_multiple(self) -> int:
        """What every batch's size must be a multiple of: the devices a JAX distribution splits it over, else 1."""
        return self.replicas if self.distribution is not None else 1

    def running(self):
        """The context a run trains and predicts in: JAX's data-parallel distribution, where there is one."""
        return self.distribution.scope() if self.distribution is not None else nullcontext()


class _NoStrategy:
    """A strategy's face for a JAX run: models are built on the distribution (`Devices.running`) instead."""

    def __init__(self, replicas: int):
        self.num_replicas_in_sync = replicas

    def scope(self):
        return nullcontext()


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
    import keras

    if keras.backend.backend() == "jax":
        return _configure_jax(trainer)
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


FAST_BF16 = (8, 0)  # NVIDIA compute capability from which bfloat16 matmuls run at full tensor-core speed (Ampere)


def _configure_jax(trainer) -> Devices:
    """Under JAX: every local device in one `DataParallel` distribution (GPUs, or the CPU devices that
    `trainer.cpu_devices` made), and `precision=auto` as mixed_bfloat16 on GPUs with fast bfloat16, mixed_float16 on
    older GPUs, float32 on a CPU."""
    import jax
    import keras

    process = join_processes(trainer)
    devices = jax.devices() if process[1] > 1 else jax.local_devices()  # every process's devices, or this one's
    gpus = [d for d in devices if d.platform == "gpu"]
    precision = trainer.precision
    if precision == "auto":
        capabilities = [tuple(int(p) for p in str(getattr(d, "compute_capability", "0.0")).split(".")[:2]) for d in gpus]
        precision = "float32" if not gpus else "mixed_bfloat16" if min(capabilities) >= FAST_BF16 else "mixed_float16"
    spread = len(devices) > 1 and trainer.strategy != "default"
    distribution = keras.distribution.DataParallel(devices=[f"{d.platform}:{d.id}" for d in devices],
                                                   auto_shard_dataset=False) if spread else None  # our batches shard
    replicas = len(devices) if spread else 1
    if trainer.batch_size % replicas:
        from .schema import ConfigError

        raise ConfigError(f"trainer.batch_size={trainer.batch_size}: JAX's DataParallel splits each batch evenly over the "
                          f"{replicas} devices; use a multiple of {replicas} (or trainer.strategy=default)")
    where = f"{len(gpus)} GPU(s)" if gpus else f"{len(devices)} CPU device(s)"
    if process[1] > 1:
        where += f" of {process[1]} processes (this one {process[0]})"
    kind = "DataParallel" if spread else "one device"
    return Devices(_NoStrategy(replicas), replicas, precision, f"JAX {kind} x{replicas} on {where}, {precision}", distribution,
                   process)


def join_processes(trainer) -> tuple[int, int]:
    """`trainer.distributed.enabled`: join the run's other processes through `jax.distributed.initialize` (once per
    process; the coordinator, process count and index from the config, or read by JAX from SLURM or Open MPI).
    Returns (this process's index, processes): (0, 1) when the run is one process."""
    distributed = trainer.get("distributed")
    if distributed is None or not distributed.enabled:
        return 0, 1
    import jax

    if not jax.distributed.is_initialized():
        jax.distributed.initialize(coordinator_address=distributed.coordinator, num_processes=distributed.processes,
                                   process_id=distributed.process_id)
    return jax.process_index(), jax.process_count()


def visible_gpus() -> list[str]:
    """The GPUs nvidia-smi lists (their indices), or none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10)
        return [line.strip() for line in out.stdout.splitlines() if line.strip()]
    except (OSError, subprocess.SubprocessError):
        return []


def optimizer_for(model, learning_rate: float):
    """Adam for `model`; under `mixed_float16` on TensorFlow wrapped in a loss-scale optimizer that skips a step when
    any replica's gradients are not finite. Keras' own takes the first replica's verdict for all ("grads is
    all-reduced"), but its TensorFlow trainer hands each replica's own gradients to `apply`: with a
    MirroredStrategy one replica's overflow was summed into the weights, and the fold's model predicted NaN."""
    import keras

    adam = keras.optimizers.Adam(learning_rate)
    if keras.backend.backend() != "tensorflow" or getattr(model.dtype_policy, "name", "") != "mixed_float16":
        return adam
    return _replica_safe_loss_scale()(adam)


def _replica_safe_loss_scale():
    import keras
    import tensorflow as tf
    from keras import ops

    class ReplicaSafeLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
        def _tf_apply(self, grads, trainable_variables=None):
            if tf.__internal__.distribute.strategy_supports_no_merge_call():
                return self._common_apply(grads, trainable_variables=trainable_variables)

            def cross_replica(distribution, grads, trainable_variables):
                per_replica = distribution.extended.call_for_each_replica(self.check_finite, args=(grads,))
                finite = ops.all(ops.stack(distribution.experimental_local_results(per_replica)))

                def apply():
                    distribution.extended.call_for_each_replica(self._stateful_handle_finite_grads,
                                                                args=(grads, trainable_variables))

                ops.cond(finite, apply, self._stateful_handle_non_finite_grads)

            tf.distribute.get_replica_context().merge_call(cross_replica, args=(grads, trainable_variables))

    return ReplicaSafeLossScaleOptimizer
