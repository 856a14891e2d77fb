"""Which Keras backend a command runs on (`trainer.backend`: tensorflow or jax, or `KERAS_BACKEND`), chosen where
the command starts, before Keras is imported.

Keras reads `KERAS_BACKEND` once, at its import; JAX reads `XLA_FLAGS` once, when it first lists its devices,
which is when `trainer.cpu_devices` > 1 splits the CPU into that many devices (for tests and debugging of
multi-device runs on a machine with no accelerator).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .schema import ConfigError

BACKENDS = ("tensorflow", "jax")
DEFAULT = "tensorflow"  # the package list names TensorFlow; JAX is the `jax` extra


def wanted(trainer) -> str:
    """`trainer.backend`, else KERAS_BACKEND, else TensorFlow."""
    name = trainer.get("backend") or os.environ.get("KERAS_BACKEND") or DEFAULT
    if name not in BACKENDS:
        raise ConfigError(f"trainer.backend={name!r} (or KERAS_BACKEND) is not one of {', '.join(BACKENDS)}")
    return name


def running() -> str | None:
    """The backend Keras runs on in this process, or None before Keras is imported."""
    keras = sys.modules.get("keras")
    return keras.backend.backend() if keras is not None else None


def select(trainer) -> str:
    """Make this process run Keras on the wanted backend: set KERAS_BACKEND (and under JAX, XLA's CPU device count)
    before Keras is imported. A backend that is not installed, or a process whose Keras already runs on another, is a
    ConfigError naming it. Returns the backend."""
    name = wanted(trainer)
    current = running()
    if current is not None:
        if current != name:
            raise ConfigError(f"trainer.backend={name}: Keras already runs on {current} in this process (a backend is "
                              "chosen once, before Keras is imported: start a new process)")
        return name
    if importlib.util.find_spec(name) is None:
        extra = ' (pip install -e ".[jax]")' if name == "jax" else ""
        raise ConfigError(f"trainer.backend={name}: {name} is not installed{extra}")
    os.environ["KERAS_BACKEND"] = name
    if name != "jax" or "jax" in sys.modules:  # what follows JAX reads at its import
        return name
    _compile_cache(trainer.get("compile_cache", "auto"))
    count = trainer.get("cpu_devices") or 1
    if count > 1:
        flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
        os.environ["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={count}"])
    return name


def user_cache() -> Path:
    """`$XDG_CACHE_HOME/hms`, else `~/.cache/hms`: what hms keeps for every project of this user."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "hms"


def _compile_cache(folder) -> None:
    """JAX's persistent compilation cache in `folder` (auto: `user_cache()/xla`; None: off), read by JAX at its import:
    a later run, or a sweep's next trial, of the same shapes loads XLA's compiled programs instead of compiling them
    again. JAX keys each entry by the program, the compile options, the devices and its own version. An environment that already sets JAX_COMPILATION_CACHE_DIR wins."""
    if folder is None or "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return
    folder = user_cache() / "xla" if folder == "auto" else Path(folder).expanduser()
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(folder)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # CPU programs compile in under JAX's 1 s
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def resolved_source(source: str, backend: str) -> str:
    """`backbone.source` on a Keras backend: auto is the notebook's `efficientnet` package on TensorFlow (the only
    backend it runs on) and keras.applications (`keras`) on any other."""
    if source != "auto":
        return source
    return "efficientnet" if backend == "tensorflow" else "keras"
