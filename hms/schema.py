"""Typed schemas of the config groups, registered in Hydra's ConfigStore.

Every file of a group in `conf/` starts from its group's schema (`defaults: [_schema, _self_]`), so
Hydra rejects a wrong type while composing: `trainer.workers=abc` fails with the key, the value and
the expected type. Ranges and choices live beside each field (`metadata`) and `check` applies them
to a composed config, naming the key, the value and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from .features.cache import FeatureOptions
from .features.signals import SignalOptions


_SIGNAL = SignalOptions()  # the signal defaults are SignalOptions' own (hms.features.signals)
_FEATURES = FeatureOptions()  # the tile size and bad-file handling are the caches' own (hms.features.cache)


class ConfigError(ValueError):
    """A config key holds a value hms cannot use."""


def _at_least(low, what=""):
    return {"low": low, "what": what}


def _fraction(what="a probability", high_open=False):
    return {"low": 0.0, "high": 1.0, "high_open": high_open, "what": what}


def _one_of(*choices):
    return {"choices": choices}


@dataclass
class DistributedSchema:
    """`trainer.distributed`: one fold's data parallelism over the devices of several processes or hosts (JAX)."""
    enabled: bool = False  # one fold over the devices of several processes (jax.distributed); only process 0 records
    coordinator: Optional[str] = None  # host:port of process 0; null with the rest: read from SLURM or Open MPI
    processes: Optional[int] = field(default=None, metadata=_at_least(1))  # how many processes in all (null: from SLURM or Open MPI)
    process_id: Optional[int] = field(default=None, metadata=_at_least(0))  # this process's rank (null: from SLURM or Open MPI)


@dataclass
class TrainerSchema:
    epochs: int = field(default=4, metadata=_at_least(1))  # passes over the training folds' samples per fold
    batch_size: int = field(default=32, metadata=_at_least(1))  # samples per step over all replicas (the LR scales with replicas, see lr_scaling)
    precision: str = field(default="auto", metadata=_one_of("auto", "float32", "mixed_float16", "mixed_bfloat16"))
    strategy: str = field(default="auto", metadata=_one_of("auto", "mirrored", "default"))
    lr_scaling: str = field(default="linear", metadata=_one_of("linear", "none"))
    cpu_devices: int = field(default=1, metadata=_at_least(1))
    workers: int = field(default=2, metadata=_at_least(1, "threads"))
    verbose: Any = field(default="auto", metadata=_one_of("auto", 0, 1, 2))
    bn_recalibrate: bool = True
    eager: Any = field(default="auto", metadata=_one_of("auto", True, False))  # run training and prediction step by step instead of tracing a graph; auto: eagerly when the run is too short for tracing to pay (TensorFlow, one replica)
    backend: Optional[str] = field(default=None, metadata=_one_of("tensorflow", "jax"))  # None: KERAS_BACKEND or tensorflow
    compile_cache: Optional[str] = "auto"  # under JAX, a folder of XLA's compiled programs reused by later runs; auto: ~/.cache/hms/xla; null: off
    distributed: DistributedSchema = field(default_factory=DistributedSchema)


@dataclass
class BackboneSchema:
    name: str = MISSING  # the network: efficientnet_b0-b7 or a 1D model (eeg1d_cnn, eeg1d_gru, eeg1d_wavenet)
    source: str = field(default="auto", metadata=_one_of("auto", "efficientnet", "keras", "eeg1d"))  # where the network comes from: efficientnet package, keras.applications, hms's 1D models; auto picks
    weights: Optional[str] = None  # null (from scratch), imagenet (downloaded), or a local .h5/.weights.h5 file for offline use
    dropout: float = field(default=0.2, metadata=_fraction("a dropout rate", high_open=True))
    bn_momentum: Any = field(default="auto", metadata={"auto": True, "low": 0.0, "high": 1.0, "low_open": True,  # batch-norm moving-average momentum; auto: from the run's steps per epoch
                                                        "high_open": True, "what": "a momentum"})
    drop_connect: Any = field(default="auto", metadata={"auto": True, **_fraction("a rate", high_open=True)})  # EfficientNet stochastic depth; auto: the family's own rate scaled to the run length
    positions: Any = field(default="auto", metadata=_one_of("auto", True, False))  # add frequency/time position channels to the tiles; auto: on for tiles of 64 rows or more
    zero_residual: Any = field(default="auto", metadata=_one_of("auto", True, False))  # start each residual branch at zero; auto: on when training from scratch
    init: str = field(default="portable", metadata=_one_of("portable", "backend"))  # initial weights: portable (drawn with NumPy: one seed, the same weights on every Keras backend) or backend (Keras' own draw)


@dataclass
class AugmentationSchema:
    name: str = MISSING  # the option's name
    time_flip: float = field(default=0.0, metadata=_fraction())  # probability of reversing a tile in time
    hemisphere: float = field(default=0.0, metadata=_fraction())  # probability of swapping left and right chains
    coarse_dropout: float = field(default=0.0, metadata=_fraction())  # probability of blanking rectangles of a tile (albumentations CoarseDropout)
    time_shift: float = field(default=0.0, metadata=_fraction())  # input=eeg1d: shift by up to a tenth of the window
    channel_dropout: float = field(default=0.0, metadata=_fraction("a rate per pair"))  # input=eeg1d
    amplitude: float = field(default=0.0, metadata=_fraction())  # input=eeg1d: scale by 0.8-1.25
    mixup: float = field(default=0.0, metadata=_at_least(0.0, "the Beta(a, a) parameter; 0: off"))
    tta: bool = False


@dataclass
class SubmititSchema:
    """`cv.launcher=submitit`: the fold workers as one job array (SLURM where `srun` is found, else local processes)."""
    cluster: Optional[str] = field(default=None, metadata=_one_of(None, "slurm", "local", "debug"))
    folder: str = "submitit/%j"
    timeout_min: int = field(default=240, metadata=_at_least(1))
    partition: Optional[str] = None
    gpus_per_node: int = field(default=1, metadata=_at_least(0))
    cpus_per_task: Optional[int] = field(default=None, metadata=_at_least(1))
    mem_gb: Optional[float] = field(default=None, metadata=_at_least(1.0))
    array_parallelism: Optional[int] = field(default=None, metadata=_at_least(1))
    additional: Dict[str, Any] = field(default_factory=dict)


@dataclass
class CVSchema:
    folds: int = field(default=5, metadata=_at_least(2))  # patient-grouped folds (StratifiedGroupKFold on the consensus class)
    only: Optional[List[int]] = None
    stage2: bool = False
    stage2_epochs: int = field(default=2, metadata=_at_least(1))  # epochs of the second stage
    stage2_lr: float = field(default=1e-4, metadata=_at_least(0.0))  # learning rate of the second stage
    workers: int = field(default=1, metadata=_at_least(1))
    queue: Optional[str] = None
    heartbeat: float = field(default=20.0, metadata=_at_least(1.0))
    launcher: str = field(default="local", metadata=_one_of("local", "submitit", "none"))
    submitit: SubmititSchema = field(default_factory=SubmititSchema)
    seeds: Optional[List[int]] = None
    fold_seed: Optional[int] = None
    sample_weight: int = field(default=0, metadata=_at_least(0, "the vote cap; 0: off"))
    score_on: str = field(default="all", metadata=_one_of("all", "hq"))


@dataclass
class DataSchema:
    name: str = MISSING  # the option's name: kaggle (a download) or synthetic (generated)
    root: str = MISSING  # the folder in Kaggle's layout (train.csv, train_eegs/, ...)
    sampling: str = field(default="fixed", metadata=_one_of("fixed", "random"))
    eeg_spectrograms: Optional[str] = None
    bad_files: str = field(default=_FEATURES.bad_files, metadata=_one_of("fail", "skip"))  # a file that cannot be read: fail (name it and stop) or skip (name it, leave its rows out)
    cache_dir: str = MISSING  # conf/data: ${paths.cache}
    cache: str = field(default="auto", metadata=_one_of("auto", "tiles", "files"))
    workers: Optional[int] = field(default=None, metadata=_at_least(1, "processes"))


@dataclass
class SyntheticDataSchema(DataSchema):
    eegs: int = field(default=600, metadata=_at_least(1))  # eeg_ids in the generated training set
    patients: int = field(default=120, metadata=_at_least(1))  # patients they belong to
    synth_seed: int = 0  # the generator's seed




@dataclass
class SignalSchema:
    rate: int = field(default=_SIGNAL.rate, metadata=_at_least(1, "samples per second"))
    low: float = field(default=_SIGNAL.low, metadata={"low": 0.0, "low_open": True, "what": "Hz"})
    high: float = field(default=_SIGNAL.high, metadata={"low": 0.0, "low_open": True, "what": "Hz"})
    clip: float = field(default=_SIGNAL.clip, metadata={"low": 0.0, "low_open": True, "what": "microvolts"})
    scale: float = field(default=_SIGNAL.scale, metadata={"low": 0.0, "low_open": True})


@dataclass
class InputSchema:
    mix: str = MISSING  # a registered representation (hms.representations); checked in hms.config
    tile: List[int] = field(default_factory=lambda: list(_FEATURES.tile))  # [rows, columns] of each of the 8 tile channels
    signal: SignalSchema = field(default_factory=SignalSchema)  # raw-EEG signals (input=eeg1d, eeg_image)
    options: Dict[str, Any] = field(default_factory=dict)  # what one representation alone takes; it checks them


@dataclass
class PathsSchema:
    root: str = MISSING
    data: str = MISSING
    cache: str = MISSING
    tracking: str = MISSING
    sweeps: str = MISSING
    folds: str = MISSING
    spool: str = MISSING


@dataclass
class StepScheduleSchema:
    name: str = "step"
    steps: List[Any] = field(default_factory=lambda: [[0.0, 1e-3]])  # [fraction, lr] pairs: checked in hms.config


@dataclass
class CosineScheduleSchema:
    name: str = "cosine"
    lr: float = field(default=1e-3, metadata=_at_least(0.0))  # peak learning rate, reached after the warmup
    warmup: float = field(default=0.05, metadata=_fraction("a fraction of the run", high_open=True))
    min_lr: float = field(default=1e-6, metadata=_at_least(0.0))  # the learning rate at the end of the run


@dataclass
class TrackingSchema:
    uri: Optional[str] = None
    store: str = MISSING  # conf/tracking: ${paths.tracking}, used when uri and MLFLOW_TRACKING_URI are unset
    experiment: str = "hms"  # the MLflow experiment runs are recorded in
    system_metrics: Optional[float] = field(default=10.0, metadata={"low": 0.0, "low_open": True, "what": "seconds"})


@dataclass
class RootSchema:
    seed: int = 42  # training seed (weights, batches, augmentation); also the folds' unless cv.fold_seed
    resume: Optional[str] = None
    join: Optional[str] = None
    paths: Any = MISSING
    data: Any = MISSING
    backbone: Any = MISSING
    augmentation: Any = MISSING
    schedule: Any = MISSING
    input: Any = MISSING
    trainer: Any = MISSING
    cv: Any = MISSING
    tracking: Any = MISSING


SCHEMAS = {
    ("trainer", "_schema"): TrainerSchema,
    ("backbone", "_schema"): BackboneSchema,
    ("augmentation", "_schema"): AugmentationSchema,
    ("cv", "_schema"): CVSchema,
    ("data", "_schema"): DataSchema,
    ("data", "_synthetic_schema"): SyntheticDataSchema,
    ("input", "_schema"): InputSchema,
    ("schedule", "_step_schema"): StepScheduleSchema,
    ("schedule", "_cosine_schema"): CosineScheduleSchema,
    ("tracking", "_schema"): TrackingSchema,
    ("paths", "_schema"): PathsSchema,
}


def register() -> None:
    """Put the schemas in Hydra's ConfigStore (idempotent): `conf/` files name them in their defaults."""
    store = ConfigStore.instance()
    store.store(name="_hms_schema", node=RootSchema)
    for (group, name), schema in SCHEMAS.items():
        store.store(group=group, name=name, node=schema)


def check(cfg: DictConfig) -> list[str]:
    """The problems of a composed config against its schemas' ranges and choices, one line per key."""
    problems = []
    for group in ("", *(f.name for f in fields(RootSchema) if f.type == "Any")):
        node = cfg if not group else cfg.get(group)
        if not isinstance(node, DictConfig):
            continue
        schema = OmegaConf.get_type(node)
        if not (isinstance(schema, type) and is_dataclass(schema)):
            problems.append(f"{group}: has no schema (its config file must start from `defaults: [_schema, _self_]`)")
            continue
        problems += _node_problems(node, schema, group + "." if group else "")
    return problems


def _node_problems(node: DictConfig, schema, prefix: str) -> list[str]:
    problems = []
    for spec in fields(schema):
        if OmegaConf.is_missing(node, spec.name):
            continue
        value = node[spec.name]
        if isinstance(value, DictConfig) and is_dataclass(OmegaConf.get_type(value)) and prefix:  # a nested group: cv.submitit
            problems += _node_problems(value, OmegaConf.get_type(value), f"{prefix}{spec.name}.")
        elif spec.metadata:
            problem = _out_of_range(value, spec.metadata)
            if problem:
                problems.append(f"{prefix}{spec.name}={value!r} {problem}")
    return problems


def _out_of_range(value, rule: dict) -> str | None:
    if value is None or (rule.get("auto") and value == "auto"):
        return None
    if "choices" in rule:
        allowed = rule["choices"]
        if value not in allowed or (isinstance(value, bool) and not any(c is value for c in allowed)):
            return "is not one of " + ", ".join(str(c) for c in allowed)
        return None
    what = rule.get("what", "")
    auto = "auto or " if rule.get("auto") else ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"must be {auto}a number{f' ({what})' if what else ''}"
    low, high = rule.get("low"), rule.get("high")
    too_low = low is not None and (value <= low if rule.get("low_open") else value < low)
    too_high = high is not None and (value >= high if rule.get("high_open") else value > high)
    if too_low or too_high:
        left = "(" if rule.get("low_open") else "["
        right = ")" if rule.get("high_open") else "]"
        span = f"in {left}{low}, {high}{right}" if high is not None else f"{'above' if rule.get('low_open') else 'at least'} {low}"
        return f"must be {auto}{span}{f' ({what})' if what else ''}"
    return None
