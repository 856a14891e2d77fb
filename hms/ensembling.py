"""Ensembles of CV runs: find and align the candidates' out-of-fold predictions, fit the blend and
record it as an MLflow run (hms.run_type=ensemble) whose bundle file `hms.inference` reads.

The candidates are FINISHED CV runs (tag hms.run_type=cv) of the experiment, or the runs named.
Their oof.parquet files must cover the same eeg_ids, folds and targets. An Optuna study chooses
which runs to use and their weights, minimising the official KL of the blend; the best single run,
the equal-weight average and greedy forward selection (Caruana et al. 2004) are computed beside it,
and each method is also scored nested: every fold blended with weights fitted on the other folds.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import logs
from .blending import BLENDS, BUNDLE_FILE, blend, evaluate, methods
from .dataset import HQ_VOTES
from .oof import BASELINE_KEYS, OOF_COLUMNS, PRED_COLUMNS, TARGET_COLUMNS, cv_scores, oof_frame

log = logs.get(__name__)

# The config keys that tell members apart, shown beside their run ids.
CHOICE_KEYS = ("backbone.name", "input.mix", "input.tile", "augmentation.name", "schedule.name", "trainer.epochs",
               "trainer.batch_size", "data.sampling", "cv.stage2", "seed")


class EnsembleError(Exception):
    """Candidate runs that cannot be blended; the message names the runs and what is wrong."""


@dataclass
class Candidates:
    """Aligned out-of-fold predictions of the candidate runs: p[m] is run m's (rows, 6) array."""

    run_ids: list[str]
    names: list[str]
    choices: list[dict[str, str]]
    rows: pd.DataFrame  # eeg_id, fold, total_votes, y_* (sorted by eeg_id)
    p: np.ndarray  # (runs, rows, 6)
    baselines: list[dict[str, float]]  # each run's own prior_kl and baseline_kl (absent in runs older than them)

    @property
    def y(self) -> np.ndarray:
        return self.rows[list(TARGET_COLUMNS)].to_numpy(np.float64)

    @property
    def folds(self) -> np.ndarray:
        return self.rows.fold.to_numpy()

    def label(self, m: int) -> str:
        return f"{self.names[m]} ({self.run_ids[m][:8]})"


# --- finding and aligning runs ---------------------------------------------------------------

def score_metric(score_on: str) -> str:
    return "cv_kl_hq" if score_on == "hq" else "cv_kl"


def study_runs(client, experiment: str, studies, top: int, score_on: str = "all") -> list:
    """The best `top` finished CV runs (by `cv_kl`, or `cv_kl_hq` with score_on=hq) of each sweep study named."""
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise EnsembleError(f"no experiment {experiment!r} in the tracking store")
    if top < 1:
        raise EnsembleError(f"--top must be at least 1, got {top}")
    key, runs = score_metric(score_on), []
    for study in studies:
        finished = client.search_runs([found.experiment_id], f"tags.`hms.run_type` = 'cv' AND tags.`hms.sweep` = '{study}' "
                                      "AND attributes.status = 'FINISHED'", max_results=10000)
        scored = [r for r in finished if key in r.data.metrics]
        if not scored:
            raise EnsembleError(f"study {study!r}: no finished CV run with {key} in experiment {experiment!r} "
                                f"(run the sweep first: python -m hms.sweep --study {study} ...)")
        best = sorted(scored, key=lambda r: r.data.metrics[key])[:top]
        log.info(f"study {study}: the best {len(best)} of {len(scored)} finished runs by {key}: "
                 + ", ".join(f"{r.info.run_id[:8]} {r.data.metrics[key]:.4f}" for r in best))
        runs += [r for r in best if r.info.run_id not in {q.info.run_id for q in runs}]
    return runs


def find_runs(client, experiment: str, run_ids=None, filter_string: str | None = None) -> list:
    """The candidate runs: the named ones (each must be a finished CV run) or every finished CV run of the experiment."""
    from mlflow.exceptions import MlflowException

    if run_ids:
        runs = []
        for run_id in run_ids:
            try:
                run = client.get_run(run_id)
            except MlflowException as error:
                raise EnsembleError(f"run {run_id}: not found in the tracking store ({error.message})") from None
            kind = run.data.tags.get("hms.run_type")
            if kind != "cv" or run.info.status != "FINISHED":
                raise EnsembleError(f"run {run_id} ({run.info.run_name}): not a finished CV run "
                                    f"(hms.run_type={kind}, status {run.info.status})")
            runs.append(run)
        return runs
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise EnsembleError(f"no experiment {experiment!r} in the tracking store")
    query = "tags.`hms.run_type` = 'cv' AND attributes.status = 'FINISHED'" + (f" AND {filter_string}" if filter_string else "")
    runs, token = [], None
    while True:
        try:
            page = client.search_runs([found.experiment_id], query, max_results=1000, page_token=token)
        except MlflowException as error:
            raise EnsembleError(f"--filter {filter_string!r}: {error.message}") from None
        runs.extend(page)
        token = page.token
        if not token:
            break
    # A seed bag stands for its seed runs (they are in it already).
    return sorted([r for r in runs if "hms.bag" not in r.data.tags], key=lambda r: r.info.start_time)


def runs_score_on(runs) -> str:
    """The candidates' own cv.score_on (all where older runs did not log it); runs that differ must be told which."""
    found = {r.data.params.get("cv.score_on", "all") for r in runs}
    if len(found) > 1:
        raise EnsembleError(f"the candidate runs were scored on different rows (cv.score_on {sorted(found)}): "
                            "choose with --score-on all|hq")
    return found.pop() if found else "all"


def _choices(run) -> dict[str, str]:
    return {key: run.data.params[key] for key in CHOICE_KEYS if key in run.data.params}


def load_candidates(client, runs) -> Candidates:
    """Read each run's oof.parquet and check that all cover the same eeg_ids, folds and targets."""
    from .tracking import read_frame

    if len(runs) < 1:
        raise EnsembleError("no candidate runs: train some with `python -m hms.train`, or name them with --runs")
    reference, reference_name, frames = None, None, []
    for run in runs:
        name = f"run {run.info.run_id} ({run.info.run_name})"
        try:
            frame = read_frame(client, run.info.run_id, "oof.parquet").sort_values("eeg_id").reset_index(drop=True)
        except Exception as error:  # noqa: BLE001 - any failure to fetch the artifact is reported with the run's name
            raise EnsembleError(f"{name}: cannot read its oof.parquet ({type(error).__name__}: {error})") from None
        missing = [c for c in OOF_COLUMNS if c not in frame]
        if missing:
            raise EnsembleError(f"{name}: oof.parquet lacks columns {missing}")
        if reference is None:
            reference, reference_name = frame, name
        else:
            _check_aligned(reference_name, reference, name, frame)
        frames.append(frame)
    rows = reference[["eeg_id", "fold", "total_votes", *TARGET_COLUMNS]]
    p = np.stack([f[list(PRED_COLUMNS)].to_numpy(np.float64) for f in frames])
    baselines = [{k: r.data.metrics[k] for k in BASELINE_KEYS if k in r.data.metrics} for r in runs]
    return Candidates([r.info.run_id for r in runs], [r.info.run_name for r in runs], [_choices(r) for r in runs], rows, p,
                      baselines)


def _check_aligned(ref_name: str, ref: pd.DataFrame, name: str, frame: pd.DataFrame) -> None:
    prefix = f"{name} does not match {ref_name}"
    if len(frame) != len(ref) or not np.array_equal(frame.eeg_id.to_numpy(), ref.eeg_id.to_numpy()):
        only = sorted(set(ref.eeg_id) ^ set(frame.eeg_id))
        raise EnsembleError(f"{prefix}: out-of-fold rows for {len(frame)} eeg_ids vs {len(ref)}, {len(only)} not in both "
                            f"(e.g. eeg_id {only[0] if only else '?'}); blend runs over the same data and folds "
                            f"(choose them with --runs or --filter)")
    differ = int((frame.fold.to_numpy() != ref.fold.to_numpy()).sum())
    if differ:
        raise EnsembleError(f"{prefix}: {differ} eeg_ids are in other folds (cv.folds or seed differ)")
    y_differ = int((~np.isclose(frame[list(TARGET_COLUMNS)].to_numpy(), ref[list(TARGET_COLUMNS)].to_numpy(), atol=1e-6)).any(axis=1).sum())
    if y_differ:
        raise EnsembleError(f"{prefix}: the vote targets of {y_differ} eeg_ids differ (different data)")


@dataclass
class EnsembleSettings:
    """How an ensemble run was asked for: blend mode, Optuna trials, member cap, seed, candidate filter, store."""

    mode: str
    trials: int
    max_members: int | None
    seed: int
    filter_string: str | None
    tracking: object


@dataclass
class Fitted:
    """A fitted ensemble: its candidates, weights, every method's results, the blended OOF frame and its scores."""

    candidates: Candidates
    weights: np.ndarray
    results: dict
    oof: pd.DataFrame
    scores: dict
    method: str = "optuna"
    bias: np.ndarray | None = None

    @property
    def members(self) -> list[int]:
        """Candidate indices with a weight above 0, heaviest first."""
        return [m for m in np.argsort(-self.weights) if self.weights[m] > 0]


@dataclass
class EnsembleResult:
    run_id: str
    weights: np.ndarray
    scores: dict[str, float]
    candidates: Candidates


def run_ensemble(tracking_uri: str | None = None, experiment: str = "hms", run_ids=None, filter_string: str | None = None,
                 trials: int = 200, max_members: int | None = None, mode: str = "prob", seed: int = 0,
                 register: str | None = None, method: str = "auto", studies=None, top: int = 3,
                 score_on: str | None = None) -> EnsembleResult:
    """Gather the candidates, fit the blend and its baselines, and record it all as an MLflow ensemble run.
    `register`: also log the ensemble's model folder as one model and register it under that name. `method`: the
    blend method whose weights the ensemble uses; auto: the one with the best nested KL."""
    from omegaconf import OmegaConf

    from . import tracking

    if mode not in BLENDS:
        raise EnsembleError(f"--blend must be one of {BLENDS}, got {mode!r}")
    if max_members is not None and max_members < 1:
        raise EnsembleError(f"--max-members must be at least 1, got {max_members}")
    cfg_tracking = OmegaConf.create({"uri": tracking_uri, "experiment": experiment})
    client = tracking.client_for(cfg_tracking)
    if studies and (run_ids or filter_string):
        raise EnsembleError("--study picks the candidates from sweeps; leave out --runs and --filter")
    if score_on not in (None, "all", "hq"):
        raise EnsembleError(f"--score-on must be all or hq, got {score_on!r}")
    runs = study_runs(client, experiment, studies, top, score_on or "all") if studies else \
        find_runs(client, experiment, run_ids, filter_string)
    score_on = score_on or runs_score_on(runs)
    candidates = load_candidates(client, runs)
    log.info(f"{len(candidates.run_ids)} candidate runs over {len(candidates.rows)} out-of-fold rows, "
          f"{len(np.unique(candidates.folds))} folds; blend: {mode}")
    fits = methods(trials, max_members, seed)
    if method != "auto" and method not in fits:
        raise EnsembleError(f"--method must be auto or one of {', '.join(fits)}, got {method!r}")
    # score_on=hq: weights are fitted, and methods compared, on the rows with >= 10 votes (as the test labels were made)
    fit_rows = candidates.rows.total_votes.to_numpy() >= HQ_VOTES if score_on == "hq" else np.ones(len(candidates.rows), bool)
    if not fit_rows.any():
        raise EnsembleError(f"--score-on hq: none of the {len(fit_rows)} out-of-fold rows has >= {HQ_VOTES} votes")
    log.info(f"fitting on {int(fit_rows.sum())} rows (score_on={score_on})")
    results = evaluate(candidates.p[:, fit_rows], candidates.y[fit_rows], candidates.folds[fit_rows], mode, fits)
    # auto: the method whose weights, fitted on the other folds, blend each fold best (its nested KL)
    chosen = min(results, key=lambda m: results[m].nested_kl) if method == "auto" else method
    weights, bias = results[chosen].weights, results[chosen].bias
    oof = oof_frame(candidates.rows, np.arange(len(candidates.rows)), blend(candidates.p, weights, mode, bias))
    scores = cv_scores(oof)
    scores["cv_kl_nested"] = results[chosen].nested_kl
    for name, result in results.items():
        scores[f"{name}_kl"] = result.kl
        scores[f"{name}_kl_nested"] = result.nested_kl
    scores["members"] = float((weights > 0).sum())
    scores["score_on_hq"] = float(score_on == "hq")
    scores.update(member_baselines(candidates, weights))

    experiment_id = tracking.experiment_id(client, experiment)
    fitted = Fitted(candidates, weights, results, oof, scores, chosen, bias)
    members = fitted.members
    run = client.create_run(experiment_id, run_name=f"ensemble-{len(members)}of{len(candidates.run_ids)}-{mode}",
                            tags=tracking.run_tags({"hms.run_type": "ensemble",
                                                   "hms.members": ",".join(candidates.run_ids[m] for m in members)}))
    run_id = run.info.run_id
    with tracking.failing(client, run_id), logs.run_log(client, run_id):
        _record(client, run_id, fitted, EnsembleSettings(mode, trials, max_members, seed, filter_string, cfg_tracking))
    log.info(f"MLflow ensemble run {run_id}")
    log.info(f"blend method: {chosen} ({'the best nested KL' if method == 'auto' else 'asked for'}, "
             f"nested KL {results[chosen].nested_kl:.4f})")
    log.info(f"predict with: python -m hms.predict --ensemble {run_id} --out submission.csv")
    log.info(tracking.view_line(cfg_tracking, experiment_id, run_id))
    if register:
        uri = register_ensemble(client, run_id, register, experiment_id)
        log.info(f"registered as {uri}: python -m hms.predict --model-uri {uri} --out submission.csv")
    return EnsembleResult(run_id, weights, scores, candidates)


def _record(client, run_id, fitted: Fitted, settings: EnsembleSettings) -> None:
    """The ensemble run's params, metrics, bundle, candidate table, plots and OOF; the report; ends the run."""
    from . import tracking

    candidates, weights, scores, results, members = fitted.candidates, fitted.weights, fitted.scores, fitted.results, fitted.members
    mode, trials, max_members, seed = settings.mode, settings.trials, settings.max_members, settings.seed

    tracking.log_params(client, run_id, {
        "blend": mode, "trials": str(trials), "max_members": str(max_members), "seed": str(seed),
        "candidates": str(len(candidates.run_ids)), "filter": str(settings.filter_string),
        "members": ",".join(candidates.run_ids[m] for m in members),
        "weights": ",".join(f"{weights[m]:.6f}" for m in members), "method": fitted.method})
    client.set_tag(run_id, "hms.method", fitted.method)
    for key, value in scores.items():
        client.log_metric(run_id, key, float(value))
    table = candidate_table(candidates, weights)
    bundle = {"format": 1, "blend": mode, "cv_kl": scores["cv_kl"], "cv_kl_nested": scores["cv_kl_nested"],
              "tracking_uri": tracking.tracking_uri(settings.tracking),
              "members": [{"run_id": candidates.run_ids[m], "name": candidates.names[m], "weight": float(weights[m]),
                           "cv_kl": float(table.cv_kl[m]), "choices": candidates.choices[m]}
                          for m in members]}
    if fitted.bias is not None:
        bundle["bias"] = [float(b) for b in fitted.bias]
    bundle["method"] = fitted.method
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / BUNDLE_FILE).write_text(json.dumps(bundle, indent=2))
        client.log_artifact(run_id, str(Path(tmp) / BUNDLE_FILE))
        table.to_csv(Path(tmp) / "candidates.csv", index=False)
        client.log_artifact(run_id, str(Path(tmp) / "candidates.csv"))
    _log_plots(client, run_id, table, results)
    tracking.log_frame(client, run_id, fitted.oof, "oof.parquet")
    _report(candidates, table, results, scores)
    client.set_terminated(run_id, "FINISHED")


def register_ensemble(client, run_id: str, name: str, experiment_id: str) -> str:
    """Register an ensemble run's model folder (members' configs and fold weights) under `name`; tag the run with the URI."""
    from .inference import export, register_folder

    with tempfile.TemporaryDirectory() as tmp:
        uri = register_folder(client, export(client, Path(tmp) / "model", ensemble_id=run_id), name, experiment_id, run_id)
    client.set_tag(run_id, "hms.registered", uri)
    return uri


def candidate_table(candidates: Candidates, weights: np.ndarray) -> pd.DataFrame:
    """One row per candidate run: its id, name, weight, CV KL (all rows and >= 10 votes) and key config choices."""
    rows = []
    for m, run_id in enumerate(candidates.run_ids):
        scores = cv_scores(oof_frame(candidates.rows, np.arange(len(candidates.rows)), candidates.p[m]))
        rows.append({"run_id": run_id, "name": candidates.names[m], "weight": float(weights[m]), "cv_kl": scores["cv_kl"],
                     "cv_kl_hq": scores.get("cv_kl_hq", np.nan),
                     **{k: candidates.baselines[m].get(k, np.nan) for k in BASELINE_KEYS}, **candidates.choices[m]})
    return pd.DataFrame(rows)


def member_baselines(candidates: Candidates, weights: np.ndarray) -> dict[str, float]:
    """prior_kl (the members' folds share it) and the best baseline_kl among the members, from their own runs."""
    out = {}
    for key in BASELINE_KEYS:
        values = [candidates.baselines[m][key] for m in np.flatnonzero(weights > 0) if key in candidates.baselines[m]]
        if values:
            out[key] = float(min(values))
    return out


def _log_plots(client, run_id, table: pd.DataFrame, results) -> None:
    from . import plots, tracking

    labels = [f"{n} ({r[:8]})" for n, r in zip(table.name, table.run_id)]
    figures = {"weights.png": plots.member_weights(labels, table.weight.to_numpy()),
               "candidates_vs_ensemble.png": plots.candidates_vs_ensemble(
                   labels, table.cv_kl.to_numpy(), {m: (r.kl, r.nested_kl) for m, r in results.items()})}
    tracking.log_figures(client, run_id, figures)


def _report(candidates: Candidates, table: pd.DataFrame, results, scores) -> None:
    for m in table.sort_values("weight", ascending=False).index:
        if table.weight[m] > 0:
            log.info(f"  member {candidates.label(m)}: weight {table.weight[m]:.3f}, its CV KL {table.cv_kl[m]:.4f} "
                  f"(prior_kl {table.prior_kl[m]:.4f}, baseline_kl {table.baseline_kl[m]:.4f})")
    log.info(f"{'method':12s} {'KL':>8s} {'nested KL':>10s} {'seconds':>8s}")
    for method, result in results.items():
        log.info(f"{method:12s} {result.kl:8.4f} {result.nested_kl:10.4f} {result.seconds:8.1f}")
    log.info(f"ensemble cv_kl {scores['cv_kl']:.4f} (nested {scores['cv_kl_nested']:.4f}{' on the >= 10-vote rows' if scores.get('score_on_hq') else ''})"
          + "".join(f"  {label} {scores[key]:.4f}" for key, label in (("prior_kl", "prior_kl"), ("baseline_kl", "best member baseline_kl"))
                    if key in scores))
