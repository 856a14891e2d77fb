"""What a model reads: the data root, the tile kinds of an input mix, the cached items and their bad-row masks.

Library floor under `hms.prepare`, `hms.cv` and `hms.inference`: from a composed config to the
memory-mapped tiles of every training (or test) item, with the rows whose files were bad marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from . import logs
from .schema import ConfigError
from .config import fold_seed
from .dataset import assign_folds, load_train
from .features.cache import SOURCES, FeatureOptions, build_caches
from .features.files import build_window_caches
from .representations import representation_class, representation_for

log = logs.get(__name__)


def data_root(cfg: DictConfig):
    """The data root of `cfg`: the embedded synthetic dataset is generated on first use."""
    if cfg.data.name == "synthetic":
        from .synthetic import SynthSpec, ensure_dataset

        return ensure_dataset(cfg.data.root, SynthSpec(eegs=cfg.data.eegs, patients=cfg.data.patients, seed=cfg.data.synth_seed))
    return cfg.data.root


def feature_kinds(mix: str) -> tuple[str, ...]:
    """The names of the parts the representation `mix` reads with the default config's other groups, in input order."""
    from .config import compose

    return tuple(part.name for part in representation_class(mix)(compose()).parts())


def train_items(samples: pd.DataFrame, windows: pd.DataFrame, sampling: str) -> pd.DataFrame:
    """Cache items for training: each sample's fixed window, or (sampling=random) all its labelled windows."""
    if sampling == "fixed":
        return samples[["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]]
    spectrogram = samples.set_index("eeg_id")["spectrogram_id"]
    return windows.assign(spectrogram_id=spectrogram.loc[windows.eeg_id].to_numpy())[
        ["eeg_id", "spectrogram_id", "eeg_offset", "spec_offset"]].drop_duplicates().reset_index(drop=True)


def feature_options(cfg: DictConfig, progress: bool = True) -> FeatureOptions:
    """The cache settings of a config's `data` and `input` groups."""
    return FeatureOptions(tile=tuple(cfg.input.tile), cache_dir=cfg.data.cache_dir, workers=cfg.data.workers,
                          bad_files=cfg.data.bad_files, precomputed=cfg.data.eeg_spectrograms, progress=progress)


def cache_mode(cfg: DictConfig, root, split: str, items: pd.DataFrame) -> str:
    """`data.cache` resolved for the tile parts of the run's representation: with `auto`, the per-file cache where
    every window's finished tiles would take more than half the bytes of the data files they come from (random
    windows at full tile size), else tiles. Parts that are not tiles are always made from the per-file cache."""
    mode = cfg.data.get("cache", "auto")
    parts = representation_for(cfg).parts()
    tiles = [part for part in parts if part.tile]
    if not tiles:  # made per batch from the stored files; there is no tile form
        if mode == "tiles":
            raise ConfigError(f"input={cfg.input.mix} reads its windows from the per-file cache: data.cache=tiles does not "
                              "apply (use auto or files)")
        return "files"
    if mode == "files" and cfg.data.eeg_spectrograms:
        raise ConfigError("data.cache=files makes EEG spectrograms from the EEG files; data.eeg_spectrograms "
                          f"({cfg.data.eeg_spectrograms}) needs data.cache=tiles")
    if mode != "auto":
        return mode
    if cfg.data.eeg_spectrograms:
        return "tiles"
    tile_bytes = len(items) * int(np.prod(cfg.input.tile)) * 4 * 2 * len(tiles)  # float16, 4 channels per kind
    file_bytes = 0
    for part in tiles:
        for file_id in np.unique(items[SOURCES[part.stored].column].to_numpy(np.int64)):
            path = SOURCES[part.stored].path(root, int(file_id), split)
            file_bytes += path.stat().st_size if path.is_file() else 0
    return "files" if tile_bytes > file_bytes / 2 else "tiles"


def build_features(cfg: DictConfig, root, split: str, items: pd.DataFrame, progress: bool = True) -> dict:
    """Build or open the caches of every part the run's representation reads, by part name, in its order: finished
    tiles in the tile cache, or arrays made per batch from the per-file cache (`data.cache`); all index like arrays."""
    options = feature_options(cfg, progress)
    parts = representation_for(cfg).parts()
    tiles_mode = cache_mode(cfg, root, split, items) == "tiles"
    finished = [part.name for part in parts if part.tile and tiles_mode]
    made = [part for part in parts if not (part.tile and tiles_mode)]
    caches = build_caches(root, split, finished, items, options) if finished else {}
    if made:
        caches.update(build_window_caches(root, split, made, items, options))
    return {part.name: caches[part.name] for part in parts}


def bad_rows(caches, count: int) -> np.ndarray:
    """(count,) bool: the cache rows whose data file was bad in any of `caches` (data.bad_files=skip)."""
    bad = np.zeros(count, bool)
    for cache in caches:
        bad[cache.bad_items()] = True
    return bad


@dataclass
class TrainingData:
    """Samples with their folds, and for each the cache rows of its fixed window and of all its windows."""

    samples: pd.DataFrame
    sources: list
    fixed_rows: np.ndarray
    window_rows: list
    row_eeg_ids: np.ndarray  # the eeg_id of each cache row
    root: str = ""
    digest: str = ""  # of every input the features were made from (the caches' keys)


def load_training_data(cfg: DictConfig) -> TrainingData:
    """Labels -> windows -> features: samples, folds and the memory-mapped tiles, bad files left out."""
    root = data_root(cfg)
    samples, windows = load_train(root)
    try:
        samples = samples.assign(fold=assign_folds(samples, cfg.cv.folds, fold_seed(cfg)))
    except ValueError as error:  # e.g. more folds than patients
        raise ConfigError(f"{error} (in {root})") from None
    items = train_items(samples, windows, cfg.data.sampling)
    caches = build_features(cfg, root, "train", items)
    key = pd.MultiIndex.from_frame(items[["eeg_id", "eeg_offset", "spec_offset"]].astype({"eeg_id": "int64"}))
    position = pd.Series(np.arange(len(items)), index=key)
    fixed_rows = position.loc[list(zip(samples.eeg_id, samples.eeg_offset, samples.spec_offset))].to_numpy()
    bad = bad_rows(caches.values(), len(items))
    per_eeg = pd.Series(np.arange(len(items))[~bad]).groupby(items.eeg_id.to_numpy()[~bad]).agg(list)
    keep = ~bad[fixed_rows]
    if not keep.all():
        log.warning(f"{int((~keep).sum())} sample(s) left out: their files are bad (data.bad_files=skip)")
    samples = samples[keep].reset_index(drop=True)
    fixed_rows = fixed_rows[keep]
    window_rows = [per_eeg.loc[e] for e in samples.eeg_id] if cfg.data.sampling == "random" else [[r] for r in fixed_rows]
    import hashlib

    digest = hashlib.sha256(" ".join(sorted(c.path.name for c in caches.values())).encode())
    digest.update(np.ascontiguousarray(items[["eeg_offset", "spec_offset"]].to_numpy(np.float64)).tobytes())  # windows
    digest = digest.hexdigest()[:16]
    return TrainingData(samples, [cache.features for cache in caches.values()], fixed_rows, window_rows,
                        items.eeg_id.to_numpy(np.int64), str(Path(root).resolve()), digest)
