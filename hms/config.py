"""Composing and validating the Hydra config tree in `conf/`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import schema
from .schema import ConfigError

def _shipped(folder: str) -> Path:
    """A folder the repository keeps at its top level (`conf/`, `sweeps/`) and a wheel ships inside the package
    (`hms/conf`, `hms/sweeps`): the checkout's when running from one, else the installed copy."""
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / folder, package / folder):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"hms is installed without its {folder}/ folder (looked in {package.parent} and {package})")


CONF_DIR = _shipped("conf")
SHIPPED_SWEEPS = _shipped("sweeps")


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m hms.train OVERRIDES` would run, composed with Hydra and validated."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import ConfigCompositionException

    schema.register()  # the group files in conf/ start from these typed schemas

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="config", overrides=list(overrides))
        except ConfigCompositionException as error:  # Hydra names the override, its cause the key, value and type
            cause = f"\n{error.__cause__}" if error.__cause__ is not None else ""
            raise ConfigError(f"{error}{cause}") from error
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is unusable.

    Types are enforced by the schemas while Hydra composes (hms.schema); their ranges and choices, and
    what a schema cannot say (shapes, orderings, files), are checked here."""
    problems = schema.check(cfg)
    if problems:
        raise ConfigError(problems[0] if len(problems) == 1 else "; ".join(problems))
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError(f"data.root is required for data={cfg.data.name}: the folder holding train.csv")
    tile = list(cfg.input.tile)
    if len(tile) != 2 or any(t < 8 or t % 8 for t in tile):
        raise ConfigError(f"input.tile={tile} must be [height, width], multiples of 8")
    if cfg.cv.only is not None:
        only = list(cfg.cv.only)
        if not only:
            raise ConfigError("cv.only=[] names no fold: list the folds to run, e.g. cv.only=[0], or null for all")
        if any(f not in range(cfg.cv.folds) for f in only):
            raise ConfigError(f"cv.only={only} names folds outside 0..{cfg.cv.folds - 1}")
        if len(set(only)) != len(only):
            raise ConfigError(f"cv.only={only} names a fold twice: each fold is trained once")
    if cfg.schedule.name == "step":
        steps = [list(s) for s in cfg.schedule.steps]
        if (not steps or any(len(s) != 2 for s in steps) or steps[0][0] != 0 or steps != sorted(steps)
                or any(not 0 <= s[0] < 1 or s[1] < 0 for s in steps)):
            raise ConfigError(f"schedule.steps={steps} must be [fraction of the run, lr] pairs sorted by fraction, "
                              "starting at 0, fractions below 1, lr >= 0 (e.g. [[0, 1e-3], [0.5, 1e-4], [0.75, 1e-5]])")
    check_representation(cfg)
    check_backend(cfg)
    weights = cfg.backbone.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ConfigError(f"backbone.weights={weights!r}: no such file (use null, imagenet, or a local weights file)")


def check_representation(cfg: DictConfig) -> None:
    """The run's representation is registered, takes the chosen backbone, its own `input` keys and augmentations."""
    from .backends import resolved_source, wanted
    from .representations import FAMILIES, family_of, list_representations, representation_class

    representation = representation_class(cfg.input.mix)(cfg)
    source = resolved_source(cfg.backbone.source, wanted(cfg.trainer))
    family = family_of(source)
    if family != representation.family:
        takes = ", ".join(list_representations(family)) if family else "none registered"
        raise ConfigError(f"backbone={cfg.backbone.name} ({source}) does not take input.mix={cfg.input.mix}: "
                          f"{representation.name} is for {representation.family} backbones (sources "
                          f"{', '.join(FAMILIES[representation.family])}); {cfg.backbone.name} takes {takes}")
    representation.check()
    representation.check_augmentation()


def check_backend(cfg: DictConfig) -> None:
    """What the chosen Keras backend cannot run, refused by name before anything runs."""
    from .backends import resolved_source, wanted

    backend = wanted(cfg.trainer)
    distributed = cfg.trainer.get("distributed")
    if distributed is not None and distributed.enabled:
        if backend != "jax":
            raise ConfigError(f"trainer.distributed.enabled=true needs trainer.backend=jax (jax.distributed); Keras on "
                              f"{backend} has no working multi-process data parallelism")
        if cfg.cv.get("workers", 1) > 1:
            raise ConfigError("trainer.distributed.enabled=true spreads one fold over every process; cv.workers > 1 trains "
                              "folds side by side instead: use one or the other")
    if backend == "tensorflow":
        return
    if cfg.trainer.strategy == "mirrored":
        raise ConfigError(f"trainer.strategy=mirrored is TensorFlow's MirroredStrategy; trainer.backend={backend} spreads a "
                          "batch over every local device with keras.distribution.DataParallel (trainer.strategy=auto)")
    if resolved_source(cfg.backbone.source, backend) == "efficientnet":
        raise ConfigError(f"backbone.source=efficientnet: the efficientnet package needs TensorFlow, not trainer.backend="
                          f"{backend}; use backbone.source=keras or auto (keras.applications' EfficientNets)")


def fold_seed(cfg: DictConfig) -> int:
    """The seed of the fold assignment: `cv.fold_seed`, or the run's `seed` (a seed bag keeps one assignment)."""
    value = cfg.cv.get("fold_seed")
    return int(cfg.seed if value is None else value)


def planned_folds(cfg: DictConfig) -> list[int]:
    """The folds a run trains: `cv.only`, or all of them."""
    return list(cfg.cv.only) if cfg.cv.only is not None else list(range(cfg.cv.folds))
