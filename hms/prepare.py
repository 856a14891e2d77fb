"""`python -m hms.prepare [overrides]`: build the feature cache for `data.root` (training builds it on first use)."""

from __future__ import annotations

import hydra
import pandas as pd
from omegaconf import DictConfig

from .data import load_test, load_train
from .features.cache import FeatureCache, build_caches


def prepare_data(cfg: DictConfig):
    """The data root of `cfg`: the embedded synthetic dataset is generated on first use."""
    if cfg.data.name == "synthetic":
        from .synth import SynthSpec, ensure_dataset

        return ensure_dataset(cfg.data.root, SynthSpec(eegs=cfg.data.eegs, patients=cfg.data.patients, seed=cfg.data.synth_seed))
    return cfg.data.root


def feature_kinds(mix: str) -> tuple[str, ...]:
    """The tile kinds an `input.mix` needs, in montage order (Kaggle tiles first)."""
    return {"both": ("kaggle", "eeg"), "kaggle": ("kaggle",), "eeg": ("eeg",)}[mix]


def train_items(samples: pd.DataFrame, windows: pd.DataFrame, sampling: str) -> pd.DataFrame:
    """Cache items for training: each sample's fixed window, or (sampling=random) all its labelled windows."""
    if sampling == "fixed":
        return samples[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]]
    spectrogram = samples.set_index("eeg_id")["spectrogram_id"]
    return windows.assign(spectrogram_id=spectrogram.loc[windows.eeg_id].to_numpy())[
        ["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]].drop_duplicates().reset_index(drop=True)


def build_features(cfg: DictConfig, root, split: str, items: pd.DataFrame, progress: bool = True) -> dict[str, FeatureCache]:
    """Build or open the caches of every tile kind `cfg.input.mix` needs for `items`."""
    return build_caches(root, split, feature_kinds(cfg.input.mix), items, tile=tuple(cfg.input.tile),
                        cache_dir=cfg.data.cache_dir, workers=cfg.data.workers, bad_files=cfg.data.bad_files,
                        precomputed=cfg.data.eeg_spectrograms, progress=progress)


@hydra.main(config_path="../conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Build the train (and, where test.csv exists, test) feature caches of the composed config."""
    from pathlib import Path

    from .config import validate

    validate(cfg)
    root = prepare_data(cfg)
    samples, windows = load_train(root)
    for kind, cache in build_features(cfg, root, "train", train_items(samples, windows, cfg.data.sampling)).items():
        print(f"train {kind}: {len(cache.index)} items, {len(cache.bad_items())} bad, at {cache.path}")
    if (Path(root) / "test.csv").exists():
        for kind, cache in build_features(cfg, root, "test", load_test(root)).items():
            print(f"test {kind}: {len(cache.index)} items at {cache.path}")


if __name__ == "__main__":
    main()
