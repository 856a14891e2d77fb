"""`python -m hms.train [overrides]`: one cross-validated experiment on the composed config."""

from __future__ import annotations

import sys

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import ConfigError, validate


def prepare_data(cfg: DictConfig):
    """The data root of `cfg`: the embedded synthetic dataset is generated on first use."""
    if cfg.data.name == "synthetic":
        from .synth import SynthSpec, ensure_dataset

        return ensure_dataset(cfg.data.root, SynthSpec(eegs=cfg.data.eegs, patients=cfg.data.patients, seed=cfg.data.synth_seed))
    return cfg.data.root


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    """Compose, validate and run one experiment."""
    try:
        validate(cfg)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    root = prepare_data(cfg)
    print(OmegaConf.to_yaml(cfg))
    print(f"data ready at {root}")
    return None


if __name__ == "__main__":
    main()
