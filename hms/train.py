"""`python -m hms.train [overrides]`: one cross-validated experiment, recorded in MLflow (library: `hms.cv`)."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR, ConfigError, validate


def main() -> float:
    """The command's entry point (`python -m`, the console script): logging and the config schemas, then Hydra."""
    from . import logs, schema

    logs.install()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small artifact is noise here
    schema.register()
    return _main()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float:
    """Compose, validate and run one cross-validated experiment; returns its CV KL."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported, also under `hms-train`
    from hydra.core.hydra_config import HydraConfig

    from .cv import run_cv
    from .dataset import DataError
    from .foldqueue import QueueError

    try:
        validate(cfg)
        return run_cv(cfg, overrides=list(HydraConfig.get().overrides.task))
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    except DataError as error:
        print(f"data error: {error}", file=sys.stderr)
        sys.exit(1)
    except QueueError as error:
        print(f"fold queue: {error}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
