"""Composing and validating the Hydra config tree in `conf/`."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

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

CHOICES = {
    "trainer.precision": ("auto", "float32", "mixed_float16", "mixed_bfloat16"),
    "trainer.strategy": ("auto", "mirrored", "default"),
    "trainer.lr_scaling": ("linear", "none"),
    "input.mix": ("both", "kaggle", "eeg"),
    "data.sampling": ("fixed", "random"),
    "data.bad_files": ("fail", "skip"),
    "backbone.source": ("efficientnet", "keras"),
    "schedule.name": ("step", "cosine"),
}


class ConfigError(ValueError):
    """A config key holds a value hms cannot use."""


def compose(overrides: list[str] | tuple[str, ...] = ()) -> DictConfig:
    """The config `python -m hms.train OVERRIDES` would run, composed with Hydra and validated."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    validate(cfg)
    return cfg


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError naming the first key whose value is unusable."""
    for key, allowed in CHOICES.items():
        value = OmegaConf.select(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")
    if OmegaConf.is_missing(cfg.data, "root"):
        raise ConfigError(f"data.root is required for data={cfg.data.name}: the folder holding train.csv")
    tile = list(cfg.input.tile)
    if len(tile) != 2 or any(not isinstance(t, int) or t < 8 or t % 8 for t in tile):
        raise ConfigError(f"input.tile={tile} must be [height, width], multiples of 8")
    for key in ("trainer.epochs", "trainer.batch_size", "cv.folds"):
        value = OmegaConf.select(cfg, key)
        if not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key}={value!r} must be a positive integer")
    if cfg.cv.folds < 2:
        raise ConfigError(f"cv.folds={cfg.cv.folds} must be at least 2")
    if cfg.cv.only is not None:
        only = list(cfg.cv.only)
        if not only:
            raise ConfigError("cv.only=[] names no fold: list the folds to run, e.g. cv.only=[0], or null for all")
        if any(f not in range(cfg.cv.folds) for f in only):
            raise ConfigError(f"cv.only={only} names folds outside 0..{cfg.cv.folds - 1}")
        if len(set(only)) != len(only):
            raise ConfigError(f"cv.only={only} names a fold twice: each fold is trained once")
    verbose = cfg.trainer.get("verbose", "auto")
    if verbose != "auto" and verbose not in (0, 1, 2):
        raise ConfigError(f"trainer.verbose={verbose!r} must be auto, 0, 1 or 2")
    if not isinstance(cfg.augmentation.get("tta", False), bool):
        raise ConfigError(f"augmentation.tta={cfg.augmentation.tta!r} must be true or false")
    if cfg.schedule.name == "step":
        steps = [list(s) for s in cfg.schedule.steps]
        if (not steps or any(len(s) != 2 for s in steps) or steps[0][0] != 0 or steps != sorted(steps)
                or any(not 0 <= s[0] < 1 or s[1] < 0 for s in steps)):
            raise ConfigError(f"schedule.steps={steps} must be [fraction of the run, lr] pairs sorted by fraction, "
                              "starting at 0, fractions below 1, lr >= 0 (e.g. [[0, 1e-3], [0.5, 1e-4], [0.75, 1e-5]])")
    else:
        warmup = cfg.schedule.get("warmup")
        if not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
            raise ConfigError(f"schedule.warmup={warmup!r} must be a fraction of the run in [0, 1)")
    _check_auto_or_number(cfg, "backbone.bn_momentum", 0.0, 1.0, "a momentum in (0, 1)")
    _check_auto_or_number(cfg, "backbone.drop_connect", -1e-12, 1.0, "a rate in [0, 1)")
    weights = cfg.backbone.weights
    if weights not in (None, "imagenet") and not Path(weights).is_file():
        raise ConfigError(f"backbone.weights={weights!r}: no such file (use null, imagenet, or a local weights file)")


def _check_auto_or_number(cfg, key: str, low: float, high: float, what: str) -> None:
    value = OmegaConf.select(cfg, key)
    if value == "auto":
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
        raise ConfigError(f"{key}={value!r} must be auto or {what}")


def planned_folds(cfg: DictConfig) -> list[int]:
    """The folds a run trains: `cv.only`, or all of them."""
    return list(cfg.cv.only) if cfg.cv.only is not None else list(range(cfg.cv.folds))
