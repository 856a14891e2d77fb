"""`python -m hms.prepare [overrides]`: build the feature cache for `data.root` (training builds it on first use)."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR, validate
from .dataset import load_test, load_train
from .inputs import build_features, data_root, train_items


def main() -> None:
    """The command's entry point (`python -m`, the console script): logging and the config schemas, then Hydra."""
    from . import logs, schema

    logs.install()
    schema.register()
    return _main()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> None:
    """Build the train (and, where test.csv exists, test) feature caches of the composed config."""
    validate(cfg)
    root = data_root(cfg)
    samples, windows = load_train(root)
    for kind, cache in build_features(cfg, root, "train", train_items(samples, windows, cfg.data.sampling)).items():
        print(f"train {kind}: {len(cache.index)} items, {len(cache.bad_items())} bad, at {cache.path}")
    if (Path(root) / "test.csv").exists():
        for kind, cache in build_features(cfg, root, "test", load_test(root)).items():
            print(f"test {kind}: {len(cache.index)} items at {cache.path}")


if __name__ == "__main__":
    main()
