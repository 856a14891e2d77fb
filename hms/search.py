"""Optuna searches over Hydra overrides, pruned fold by fold: the library under `python -m hms.sweep`.

A search space is a YAML file in `sweeps/` (see `hms.sweep`). Each trial composes base + sampled +
trailing overrides, runs one cross-validation (`hms.cv.run_cv`) and reports the mean KL of its
finished folds after each fold, so the pruner can stop it early.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from . import logs
from .foldqueue import HEARTBEAT_SECONDS, open_storage  # noqa: F401 - one storage opener for studies and fold queues

log = logs.get(__name__)

TYPES = ("categorical", "int", "float")
# median and threshold see the running mean KL of the folds so far (step: folds done - 1); wilcoxon sees each
# fold's own KL (step: the fold number) and compares it, fold by fold, with the best trial's (a paired test).
PRUNERS = ("median", "threshold", "wilcoxon", "none")


class SpaceError(ValueError):
    """A search space that cannot be used: names the file and the key."""


@dataclass
class Space:
    """A parsed search space."""

    path: Path
    study: str
    direction: str = "minimize"
    sampler: dict = field(default_factory=lambda: {"name": "tpe"})
    pruner: dict = field(default_factory=lambda: {"name": "median"})
    base: list = field(default_factory=list)
    params: dict = field(default_factory=dict)


def override_value(value) -> str:
    """A value as Hydra's override grammar writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if value is None:
        return "null"
    return str(value)


def load_space(path) -> Space:
    """Read and check a search-space YAML; every problem names the file and the key. A path that does not
    exist may name a shipped space (`tiny`, `sweeps/tiny.yaml`), as an installed wheel has no sweeps/ folder."""
    from .config import SHIPPED_SWEEPS

    path = Path(path)
    if not path.is_file():
        shipped = SHIPPED_SWEEPS / (path.name if path.suffix == ".yaml" else f"{path.name}.yaml")
        if not shipped.is_file():
            names = ", ".join(sorted(p.stem for p in SHIPPED_SWEEPS.glob("*.yaml")))
            raise SpaceError(f"{path}: no such search-space file (shipped spaces: {names})")
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise SpaceError(f"{path}: not valid YAML ({error})") from error
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: a search space is a mapping of study, direction, sampler, pruner, base, params")
    unknown = set(raw) - {"study", "direction", "sampler", "pruner", "base", "params"}
    if unknown:
        raise SpaceError(f"{path}: unknown key(s) {sorted(unknown)}")
    space = Space(path, raw.get("study") or path.stem, raw.get("direction", "minimize"),
                  raw.get("sampler") or {"name": "tpe"}, raw.get("pruner") or {"name": "median"},
                  list(raw.get("base") or []), dict(raw.get("params") or {}))
    if space.direction not in ("minimize", "maximize"):
        raise SpaceError(f"{path}: direction must be minimize or maximize, got {space.direction!r}")
    if space.sampler.get("name") not in ("tpe", "random"):
        raise SpaceError(f"{path}: sampler.name must be tpe or random, got {space.sampler.get('name')!r}")
    if space.pruner.get("name") not in PRUNERS:
        raise SpaceError(f"{path}: pruner.name must be one of {', '.join(PRUNERS)}, got {space.pruner.get('name')!r}")
    if space.pruner["name"] == "threshold" and "upper" not in space.pruner:
        raise SpaceError(f"{path}: pruner.upper is needed by the threshold pruner (stop trials whose mean fold KL exceeds it)")
    if not space.params:
        raise SpaceError(f"{path}: params is empty: nothing to search")
    for key, spec in space.params.items():
        where = f"{path}: params.{key}"
        if not isinstance(spec, dict) or spec.get("type") not in TYPES:
            raise SpaceError(f"{where}: type must be one of {', '.join(TYPES)}")
        if spec["type"] == "categorical" and not spec.get("choices"):
            raise SpaceError(f"{where}: a categorical parameter needs choices")
        if spec["type"] in ("int", "float"):
            if "low" not in spec or "high" not in spec or not float(spec["low"]) < float(spec["high"]):
                raise SpaceError(f"{where}: needs low < high")
            if spec.get("log") and float(spec["low"]) <= 0:
                raise SpaceError(f"{where}: a log scale needs low > 0")
        for other in (spec.get("when") or {}):
            if other not in space.params or list(space.params).index(other) > list(space.params).index(key):
                raise SpaceError(f"{where}: when refers to {other!r}, which is not a parameter listed before it")
    return space


def check_composes(space: Space, trailing=()) -> None:
    """Compose the base config with every categorical choice and both ends of every range, before any
    training: a key or group that does not exist, or a value hms rejects, fails here naming it."""
    from hydra.errors import HydraException

    from .config import ConfigError, compose

    fixed = [*space.base, *trailing]
    try:
        compose(fixed)
    except (HydraException, ConfigError) as error:
        raise SpaceError(f"{space.path}: base overrides {fixed} do not compose: {error}") from error
    for key, spec in space.params.items():
        values = spec["choices"] if spec["type"] == "categorical" else [spec["low"], spec["high"]]
        for value in values:
            override = f"{key}={override_value(int(value) if spec['type'] == 'int' else value)}"
            try:
                compose([*fixed, *_conditions(space, key), override])
            except (HydraException, ConfigError) as error:
                raise SpaceError(f"{space.path}: params.{key}: {override} does not compose: {error}") from error


def _conditions(space: Space, key: str) -> list[str]:
    """Overrides that make `key`'s `when` conditions true, to check it in the config it would meet."""
    return [f"{k}={override_value(v)}" for k, v in (space.params[key].get("when") or {}).items()]


def sample(trial, space: Space) -> list[str]:
    """The trial's overrides for the space's parameters (conditional ones only where their condition holds)."""
    chosen, overrides = {}, []
    for key, spec in space.params.items():
        if any(chosen.get(k) != override_value(v) for k, v in (spec.get("when") or {}).items()):
            continue
        if spec["type"] == "categorical":
            labels = [override_value(c) for c in spec["choices"]]
            value = trial.suggest_categorical(key, labels)
        elif spec["type"] == "int":
            value = override_value(trial.suggest_int(key, int(spec["low"]), int(spec["high"]), step=int(spec.get("step", 1)),
                                                     log=bool(spec.get("log", False))))
        else:
            value = override_value(trial.suggest_float(key, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))))
        chosen[key] = value
        overrides.append(f"{key}={value}")
    return overrides


def default_storage(study: str, folder) -> str:
    """The embedded default: a SQLite file per study in `folder` (a config's `paths.sweeps`), created if missing."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{Path(folder) / study}.db"




class StudyError(ValueError):
    """A study or study storage that does not exist; the message names it and what there is."""


def _sampler(space: Space, offset: int):
    import optuna

    seed = None if space.sampler.get("seed") is None else int(space.sampler["seed"]) + offset
    if space.sampler["name"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=int(space.sampler.get("n_startup_trials", 5)))


def report_fold(trial, pruner: str, folds: list[float], fold: int) -> bool:
    """Report a finished fold to the trial's pruner (`folds`: the KLs so far, this fold's last); True: stop the trial.
    The Wilcoxon pruner pairs each fold's own KL with the best trial's same fold; the others see the running mean."""
    if pruner == "wilcoxon":
        trial.report(folds[-1], step=fold)
    else:
        trial.report(sum(folds) / len(folds), step=len(folds) - 1)
    return trial.should_prune()


def create_study(space: Space, storage: str, study_name: str | None = None, worker: int = 0,
                 heartbeat: float = HEARTBEAT_SECONDS):
    """Create or load the study. The sampler is seeded from the space's seed, the worker's index and the number
    of trials the study already holds: workers sharing a study, and a relaunch of a study, each propose
    their own points rather than the first launch's again."""
    import optuna

    settings = space.pruner
    if settings["name"] == "none":
        pruner = optuna.pruners.NopPruner()
    elif settings["name"] == "threshold":  # e.g. stop any trial whose folds so far are worse than the prior
        pruner = optuna.pruners.ThresholdPruner(upper=float(settings["upper"]), n_warmup_steps=int(settings.get("n_warmup_steps", 0)))
    elif settings["name"] == "wilcoxon":
        pruner = optuna.pruners.WilcoxonPruner(p_threshold=float(settings.get("p_threshold", 0.1)),
                                               n_startup_steps=int(settings.get("n_startup_steps", 2)))
    else:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=int(settings.get("n_startup_trials", 2)),
                                             n_warmup_steps=int(settings.get("n_warmup_steps", 0)))
    study = optuna.create_study(study_name=study_name or space.study, storage=open_storage(storage, heartbeat),
                                sampler=_sampler(space, worker), pruner=pruner, direction=space.direction, load_if_exists=True)
    held = len(study.get_trials(deepcopy=False))
    if held:
        study.sampler = _sampler(space, worker + 1000 * held)
    return study


def load_study(storage: str, study_name: str):
    """An existing study; a storage or a study name that does not exist is an error, never a new empty study."""
    import optuna

    if storage.startswith("sqlite:///") and not Path(storage.removeprefix("sqlite:///")).is_file():
        raise StudyError(f"no study storage at {storage.removeprefix('sqlite:///')} (launch the study first, or give --storage)")
    opened = open_storage(storage)
    names = optuna.get_all_study_names(opened)
    if study_name not in names:
        raise StudyError(f"no study {study_name!r} in {storage.split('@')[-1]}; it holds: {', '.join(names) or 'none'}")
    return optuna.load_study(study_name=study_name, storage=opened)


def _counts(trial) -> bool:
    """Whether a finished trial counts toward `--trials`: complete, pruned, or failed by an error of its own
    run. Trials of workers that died (failed by the heartbeat, their parameters retried) and surplus trials
    (started by a worker after the total was reached) do not."""
    import optuna

    state = trial.state
    if state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED):
        return True
    return state == optuna.trial.TrialState.FAIL and "hms.error" in trial.user_attrs


def finished_trials(study, running: bool = False) -> int:
    """Trials that count toward `--trials` (and, with `running`, those under way)."""
    import optuna

    return sum(1 for t in study.get_trials(deepcopy=False)
               if _counts(t) or (running and t.state == optuna.trial.TrialState.RUNNING))


def _ordinal(study, number: int) -> int:
    """The place of trial `number` among the trials that count or run, in the order the storage numbered them."""
    import optuna

    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.number <= number and (_counts(t) or t.state == optuna.trial.TrialState.RUNNING))


def close_dead_runs(study, client, study_name: str) -> list[int]:
    """Fail the stale trials of dead workers (no heartbeat) and mark their MLflow CV runs, and those runs'
    fold runs, FAILED. Returns the numbers of the trials whose runs were closed."""
    import optuna

    from . import tracking

    optuna.storages.fail_stale_trials(study)
    closed = []
    dead = [t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
            if "hms.error" not in t.user_attrs and not t.user_attrs.get("hms.surplus")]
    if not dead:
        return closed
    experiments = [e.experiment_id for e in client.search_experiments()]
    for trial in dead:
        runs = client.search_runs(
            experiments, f"tags.`hms.sweep` = '{study_name}' and tags.`hms.trial` = '{trial.number}' and attributes.status = 'RUNNING'")
        for run in runs:
            error = RuntimeError(f"the sweep worker running trial {trial.number} died (no heartbeat); its parameters are retried")
            for child in client.search_runs([run.info.experiment_id], f"tags.mlflow.parentRunId = '{run.info.run_id}' "
                                            "and attributes.status = 'RUNNING'"):
                tracking.fail_run(client, child.info.run_id, error)
            tracking.fail_run(client, run.info.run_id, error)
            closed.append(trial.number)
    return closed


def _sweep_run(client, experiment: str, study_name: str, space: Space, storage: str) -> str:
    """The study's MLflow sweep run, created on first launch and reused after."""
    runs = client.search_runs([experiment], f"tags.`hms.run_type` = 'sweep' and tags.`hms.sweep` = '{study_name}'")
    if runs:
        return runs[0].info.run_id
    from .tracking import run_tags

    run = client.create_run(experiment, run_name=f"sweep {study_name}", tags=run_tags({"hms.run_type": "sweep", "hms.sweep": study_name}))
    # Workers on several machines may start at once: the oldest sweep run of the study is the one.
    runs = client.search_runs([experiment], f"tags.`hms.run_type` = 'sweep' and tags.`hms.sweep` = '{study_name}'",
                              order_by=["attributes.start_time ASC"])
    if runs and runs[0].info.run_id != run.info.run_id:
        client.delete_run(run.info.run_id)
        return runs[0].info.run_id
    client.log_text(run.info.run_id, space.path.read_text(), "search_space.yaml")
    for key, value in (("study", study_name), ("direction", space.direction), ("sampler", space.sampler["name"]),
                       ("pruner", space.pruner["name"]), ("storage", storage.split("@")[-1])):
        client.log_param(run.info.run_id, key, value)
    return run.info.run_id


def _refresh(client, run_id: str, study) -> None:
    """Best value so far and the study's plots on the sweep run."""
    import warnings

    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return
    client.log_metric(run_id, "best_value", study.best_value, step=len(study.trials))
    client.set_tag(run_id, "hms.best_trial", str(study.best_trial.number))
    from . import tracking

    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from optuna.visualization import matplotlib as vis

        plots = {"optimization_history.png": vis.plot_optimization_history}
        if len(complete) >= 2:
            plots.update({"param_importances.png": vis.plot_param_importances,
                          "parallel_coordinate.png": vis.plot_parallel_coordinate})
        for name, plot in plots.items():
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # e.g. importances with a single distinct value
                continue
            figures[name] = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        tracking.log_figures(client, run_id, figures)


def prepare_study(space: Space, storage: str, name: str, trailing=(), worker: int = 0, heartbeat: float = HEARTBEAT_SECONDS):
    """The study and its MLflow sweep run, created if new: (study, MLflow client, sweep run id)."""
    from . import tracking
    from .backends import select
    from .config import compose

    study = create_study(space, storage, name, worker, heartbeat)
    cfg = compose([*space.base, *trailing])
    select(cfg.trainer)  # every trial runs on the base's Keras backend, chosen before Keras is imported
    client = tracking.client_for(cfg.tracking)
    experiment = tracking.experiment_id(client, cfg.tracking.experiment)
    return study, client, _sweep_run(client, experiment, name, space, storage)


def _twin(study, trial) -> int | None:
    """Another trial (complete, pruned, running, or failed by its own error) with this trial's parameters: its number.
    Each trial stores its parameters before it looks, so of two that drew the same point at once at least one sees
    the other. The retry of a dead worker's trial repeats only a trial that does not count, so it is no twin."""
    import optuna

    params = study._storage.get_trial(trial._trial_id).params
    for other in study.get_trials(deepcopy=False):
        if other.number != trial.number and other.params == params and (
                _counts(other) or other.state == optuna.trial.TrialState.RUNNING):
            return other.number
    return None


class _Surplus(Exception):
    """A trial started after the study already held its total (two workers finishing together)."""


def launch(space_path, trials: int, storage: str | None = None, study_name: str | None = None, trailing=(),
           worker: int = 0, heartbeat: float = HEARTBEAT_SECONDS) -> None:
    """Run trials of the study until it holds `trials` that count: complete, pruned, or failed by their own
    error. Each runs once: the trial of a worker that died is failed by its missing heartbeat, its MLflow
    run marked FAILED and its parameters retried once; a trial started beyond the total stops at once."""
    import optuna

    from .config import compose
    from .cv import run_cv

    space = load_space(space_path)
    check_composes(space, trailing)
    name = study_name or space.study
    storage = storage or default_storage(name, compose([*space.base, *trailing]).paths.sweeps)
    study, client, sweep_run = prepare_study(space, storage, name, trailing, worker, heartbeat)
    for number in close_dead_runs(study, client, name):
        log.info(f"trial {number}: its worker died; its MLflow run is marked FAILED and its parameters are retried")

    def objective(trial):
        try:
            return trial_body(trial)
        except KeyboardInterrupt as error:  # SIGTERM or Ctrl-C, anywhere in the trial: its parameters wait for a worker
            trial.set_user_attr("hms.released", str(error) or "interrupted")
            if trial.params:  # sampled (an interrupt before that leaves nothing to repeat)
                study.enqueue_trial(trial.params, skip_if_exists=False)
            log.info(f"trial {trial.number}: {error or 'interrupted'}; its parameters are queued again")
            raise

    def trial_body(trial):
        import keras

        close_dead_runs(study, client, name)
        if _ordinal(study, trial.number) > trials:
            trial.set_user_attr("hms.surplus", True)
            raise _Surplus(f"the study already holds {trials} trial(s)")
        keras.backend.clear_session()  # one process runs many trials: free the previous models
        sampled = sample(trial, space)
        twin = _twin(study, trial)
        if twin is not None:  # another worker's sampler, seeded alike, proposed the same point: diverge from it
            import secrets

            trial.set_user_attr("hms.surplus", True)
            study.sampler = _sampler(space, worker + 1000 * len(study.get_trials(deepcopy=False)) + 1 + secrets.randbelow(2**20))
            raise _Surplus(f"trial {twin} already runs or ran these parameters; this worker's sampler is reseeded")
        overrides = [*space.base, *sampled, *trailing]
        trial.set_user_attr("overrides", overrides)
        cfg = compose(overrides)
        planned = len(cfg.cv.only) if cfg.cv.only is not None else cfg.cv.folds
        folds = []

        def on_fold(fold, kl, run_id):
            trial.set_user_attr("mlflow_run_id", run_id)
            folds.append(kl)
            return report_fold(trial, space.pruner["name"], folds, fold)

        tags = {"hms.sweep": name, "hms.trial": str(trial.number), "mlflow.parentRunId": sweep_run}  # nested under the sweep
        tags.update({f"hms.param.{k}": v for k, v in trial.params.items()})
        try:
            value = run_cv(cfg, tags=tags, on_fold=on_fold)  # interrupted, its runs end KILLED
        except Exception as error:
            trial.set_user_attr("hms.error", f"{type(error).__name__}: {error}"[:2000])  # it counts: not retried
            raise
        _record_baselines(trial, client)
        if len(folds) < planned:  # run_cv stopped early: the pruner said so
            raise optuna.TrialPruned(f"pruned after {len(folds)} fold(s), mean KL {value:.4f}")
        return value

    def after(study, trial):
        _refresh(client, sweep_run, study)
        if finished_trials(study, running=True) >= trials:  # trials under way in other workers count
            study.stop()

    client.update_run(sweep_run, status="RUNNING")
    import logging

    optuna_log = logging.getLogger("optuna.study._optimize")  # where Optuna logs a failed trial
    optuna_log.addFilter(_no_interrupt_tracebacks)
    try:
        _run_trials(study, client, name, trials, heartbeat, objective, after)
    except KeyboardInterrupt:  # the sweep run is KILLED unless other workers' trials still run (the last one out ends it)
        running = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.RUNNING]
        if not running:
            client.set_terminated(sweep_run, "KILLED")
        raise
    finally:
        optuna_log.removeFilter(_no_interrupt_tracebacks)
    if finished_trials(study) >= trials and finished_trials(study, running=True) == finished_trials(study):
        client.set_terminated(sweep_run, "FINISHED")  # the last worker out closes the sweep run
    log.info(f"study {name}: {finished_trials(study)} finished trial(s); best {_best_line(study)}")
    from . import tracking

    log.info(tracking.view_line({"uri": client.tracking_uri}, client.get_run(sweep_run).info.experiment_id, sweep_run))


def _no_interrupt_tracebacks(record) -> bool:
    """Optuna logs a trial ended by SIGTERM or Ctrl-C as a failure with its traceback; `launch` says it in one line."""
    return not (record.exc_info and isinstance(record.exc_info[1], KeyboardInterrupt))


def _run_trials(study, client, name: str, trials: int, heartbeat: float, objective, after) -> None:
    if finished_trials(study, running=True) >= trials:
        log.info(f"study {name} already holds {finished_trials(study, running=True)} finished or running trial(s) (asked for {trials})")
    else:
        study.optimize(objective, n_trials=None, callbacks=[after], catch=(Exception,))
    _until_none_in_flight(study, client, name, trials, heartbeat, lambda: study.optimize(
        objective, n_trials=None, callbacks=[after], catch=(Exception,)))


def _until_none_in_flight(study, client, name: str, trials: int, heartbeat: float, run_waiting) -> None:
    """Do not leave while trials are in flight: wait for other workers' trials to end, or for a dead worker's heartbeat
    to lapse, then run its retried parameters (`run_waiting`) if the study is still short of `trials`. A relaunch
    that ended while a killed worker's trial was still RUNNING left it, and its MLflow runs, RUNNING for good."""
    import time

    import optuna

    from optuna.storages._heartbeat import is_heartbeat_enabled

    if not is_heartbeat_enabled(study._storage):
        return  # a journal file has no heartbeats: nothing would ever end a dead worker's trial
    announced = False
    while True:
        for number in close_dead_runs(study, client, name):
            log.info(f"trial {number}: its worker died; its MLflow run is marked FAILED and its parameters are retried")
        states = [t.state for t in study.get_trials(deepcopy=False)]
        if optuna.trial.TrialState.WAITING in states and finished_trials(study, running=True) < trials:
            run_waiting()
            continue
        if optuna.trial.TrialState.RUNNING not in states:
            return
        if not announced:
            log.info(f"study {name}: waiting for {states.count(optuna.trial.TrialState.RUNNING)} trial(s) in flight to "
                     f"end (a dead worker's trial is retried once its heartbeat is {3 * heartbeat:g} s old)")
            announced = True
        time.sleep(max(1.0, heartbeat / 2))


def _record_baselines(trial, client) -> None:
    """Copy the trial's CV run baselines (prior_kl, baseline_kl) and hms.learned onto the trial, for `status`."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id is None:
        return
    run = client.get_run(run_id)
    for key in ("prior_kl", "baseline_kl"):
        if key in run.data.metrics:
            trial.set_user_attr(key, run.data.metrics[key])
    if "hms.learned" in run.data.tags:
        trial.set_user_attr("learned", run.data.tags["hms.learned"])


def _best_line(study) -> str:
    try:
        best = study.best_trial
    except ValueError:
        return "none yet"
    return f"trial {best.number} value {best.value:.4f}"


def status(storage: str, study_name: str) -> str:
    """A table of the study's trials: number, state, value, duration, params."""
    study = load_study(storage, study_name)
    lines = [f"{'trial':>5}  {'state':8}  {'value':>8}  {'prior':>7}  {'baseline':>8}  {'learned':7}  {'seconds':>8}  params   "
             "(value: CV KL, or a pruned trial's last mean fold KL; prior, baseline: the same run's prior_kl and baseline_kl)"]
    for trial in study.get_trials(deepcopy=False):
        seconds = (trial.datetime_complete - trial.datetime_start).total_seconds() if trial.datetime_complete else None
        reported = trial.value if trial.value is not None else (
            list(trial.intermediate_values.values())[-1] if trial.intermediate_values else None)
        value = "-" if reported is None else f"{reported:.4f}"
        prior, baseline = (f"{trial.user_attrs[k]:.4f}" if k in trial.user_attrs else "-" for k in ("prior_kl", "baseline_kl"))
        lines.append(f"{trial.number:>5}  {trial.state.name:8}  {value:>8}  {prior:>7}  {baseline:>8}  "
                     f"{trial.user_attrs.get('learned', '-'):7}  {'-' if seconds is None else round(seconds):>8}  "
                     + " ".join(f"{k}={v}" for k, v in trial.params.items()))
    return "\n".join(lines)


def best(storage: str, study_name: str) -> str:
    """The best trial: value, params, its MLflow run id and the command that reproduces it."""
    study = load_study(storage, study_name)
    try:
        trial = study.best_trial
    except ValueError:
        raise StudyError(f"study {study_name!r} has no complete trial yet") from None
    command = "python -m hms.train " + " ".join(shlex.quote(o) for o in trial.user_attrs.get("overrides", []))
    beside = ", ".join(f"{k} {trial.user_attrs[k]:.4f}" for k in ("prior_kl", "baseline_kl") if k in trial.user_attrs)
    return (f"best trial {trial.number}: value {trial.value:.4f}" + (f" (its run's {beside})" if beside else "") + "\n"
            f"params: {trial.params}\nMLflow run: {trial.user_attrs.get('mlflow_run_id')}\nreproduce: {command}")
