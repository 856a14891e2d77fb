"""Seed bags (`cv.seeds=[0, 1, 2]`): the same config trained once per training seed, on the same folds, under one
parent run.

    bag run (hms.run_type=cv, hms.seeds=0,1,2)     oof.parquet: the seeds' OOF probabilities averaged
      seed run (hms.run_type=cv, hms.bag=<bag>)    a whole CV run of its own: fold runs, models, OOF
        fold run ...

`hms.cv.run_cv` trains the seeds (`cv.seeds` set); this module holds what a bag adds. Each seed run is an ordinary CV run (fold workers, resume and export work on it as on any other). The bag records
`cv_kl` of the averaged OOF beside each seed's (`seed<s>_cv_kl`), their mean (`seed_cv_kl_mean`) and what the bag
gained over one seed (`bag_gain` = `seed_cv_kl_mean` - `cv_kl`). Exported (`hms.predict export --run <bag>`), the bag
is one member whose folder holds every seed's fold models (`seed<s>-fold<k>.weights.h5`), all averaged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from . import logs, tracking
from .baselines import learned as has_learned
from .config import ConfigError, fold_seed
from .dataset import PRED_COLUMNS
from .oof import cv_scores

log = logs.get(__name__)
SEEDS_TAG = "hms.seeds"  # on a bag run: its seeds, comma-separated
BAG_TAG = "hms.bag"  # on a seed run: its bag's run id
SEED_TAG = "hms.seed"


def seed_config(cfg: DictConfig, seed: int) -> DictConfig:
    """A bag's config for one of its seeds: that training seed, the bag's fold assignment, no bag of its own."""
    one = OmegaConf.create(OmegaConf.to_container(cfg))
    one.seed = int(seed)
    one.cv.fold_seed = fold_seed(cfg)
    one.cv.seeds = None
    one.resume = None
    return one


def check_bag(cfg: DictConfig, on_fold) -> list[int]:
    seeds = [int(s) for s in cfg.cv.seeds]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"cv.seeds={seeds}: a seed appears twice (each seed trains one member of the bag)")
    if on_fold is not None:
        raise ConfigError("cv.seeds: a sweep's trial is one CV run that its pruner stops fold by fold; bag the best "
                          "trial's config afterwards (hms.train ... cv.seeds=[0,1,2]) or leave cv.seeds=null in the sweep")
    distributed = cfg.trainer.get("distributed")
    if distributed is not None and distributed.enabled:
        raise ConfigError("cv.seeds with trainer.distributed: spread each seed's run over the processes one at a time "
                          "(one run per seed=), or leave trainer.distributed.enabled=false")
    return seeds


def seed_runs(client, bag) -> dict[int, object]:
    from mlflow.entities import ViewType

    found = client.search_runs([bag.experiment], f"tags.`{BAG_TAG}` = '{bag.run_id}'", run_view_type=ViewType.ALL)
    runs = {}
    for run in sorted(found, key=lambda r: r.info.start_time):
        runs[int(run.data.tags[SEED_TAG])] = run  # the newest run of a seed wins
    return runs


def average_oof(frames: list[pd.DataFrame], names: list[str]) -> pd.DataFrame:
    """The OOF rows of several runs on the same rows and folds, their predicted probabilities averaged."""
    frames = [f.sort_values("eeg_id").reset_index(drop=True) for f in frames]
    first = frames[0]
    for name, frame in zip(names[1:], frames[1:]):
        if len(frame) != len(first) or not (frame.eeg_id.to_numpy() == first.eeg_id.to_numpy()).all():
            raise RuntimeError(f"{name}: its OOF rows are not those of {names[0]} (eeg_ids differ)")
        if not (frame.fold.to_numpy() == first.fold.to_numpy()).all():
            raise RuntimeError(f"{name}: its folds are not those of {names[0]}")
    out = first.copy()
    out[list(PRED_COLUMNS)] = np.mean([f[list(PRED_COLUMNS)].to_numpy(np.float64) for f in frames], axis=0)
    return out


def finish_bag(client, bag_id: str, runs: list, seeds: list[int]) -> dict:
    """The bag's records from its finished seed runs: averaged OOF and its scores, each seed's cv_kl, the gain; the
    baselines (the same folds and rows for every seed) are the first seed run's."""
    names = [f"seed {s} (run {r.info.run_id})" for s, r in zip(seeds, runs)]
    frames = [tracking.read_frame(client, r.info.run_id, "oof.parquet") for r in runs]
    oof = average_oof(frames, names)
    scores = cv_scores(oof)
    first = runs[0].data.metrics
    scores.update({k: v for k, v in first.items() if k.startswith(("prior_kl", "baseline_kl"))})
    for seed, run in zip(seeds, runs):
        scores[f"seed{seed}_cv_kl"] = run.data.metrics["cv_kl"]
    scores["seed_cv_kl_mean"] = float(np.mean([r.data.metrics["cv_kl"] for r in runs]))
    scores["bag_gain"] = scores["seed_cv_kl_mean"] - scores["cv_kl"]
    for key, value in scores.items():
        client.log_metric(bag_id, key, value)
    tracking.log_frame(client, bag_id, oof, "oof.parquet")
    try:
        tracking.log_frame(client, bag_id, tracking.read_frame(client, runs[0].info.run_id, "baselines.parquet"),
                           "baselines.parquet")
    except Exception:  # noqa: BLE001 - runs older than baselines.parquet
        pass
    client.set_tag(bag_id, "hms.learned", str(has_learned(scores["cv_kl"], scores["prior_kl"])).lower())
    client.set_terminated(bag_id, "FINISHED")
    return scores
