"""The folds of one CV run as a queue that worker processes claim from (`cv.workers`, `join=`), each fold exactly once.

The queue is an Optuna study in an RDB storage (the sweeps' SQLite files by default, PostgreSQL across machines):
one enqueued trial per fold to train and one for the finishing step. What makes each step run once:

- A claim is one conditional UPDATE of the trial's row (WAITING -> RUNNING), atomic in SQLite and PostgreSQL alike:
  of two workers claiming the same trial one changes the row and the other tries the next (or gets a storage
  error from a locked SQLite file, and tries again later).
- A worker sends a heartbeat for the trial it holds. A trial whose heartbeat lapses (its worker was killed, or its
  machine lost) is failed by the first worker that looks (`optuna.storages.fail_stale_trials`), and
  `RetryHeartbeatStaleTrialCallback` queues a copy of it, which any worker then claims.
- The finishing step (OOF, scores, plots, the parent run's end) is claimable only once every fold's trial is
  COMPLETE, so it runs once, in whichever worker finds the last fold done.
- Only the process that opens the queue (`hms.train cv.workers=N`, or `resume=` with workers) enqueues; workers
  that join never do, so no fold is queued twice.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HEARTBEAT_SECONDS = 20  # a RUNNING trial whose worker sent no heartbeat for 3 x this long is failed and retried
FINISH = -1  # the "fold" number of the finishing step
MAX_RETRY = 3  # a fold whose worker died this many times more than once is not claimed again: the run fails
TAG = "hms.fold_queue"  # the parent run's tag naming its queue: "<study name> @ <storage URL, redacted>"


class QueueError(RuntimeError):
    """A fold failed with an error of its own (not a dead worker), or the queue cannot be found."""


def ready(url: str) -> str:
    """The storage URL, with the folder of a SQLite file made if missing (`paths.folds`: under `paths.sweeps`)."""
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{path.resolve()}"
    return url


@dataclass
class Claim:
    trial_id: int
    number: int
    fold: int  # FINISH for the finishing step


class FoldQueue:
    """A CV run's fold queue (see the module's docstring)."""

    def __init__(self, study, heartbeat: float):
        self.study, self.heartbeat = study, heartbeat

    @property
    def storage(self):
        return self.study._storage

    @classmethod
    def create(cls, url: str, run_id: str, folds, heartbeat: float) -> FoldQueue:
        """A new queue for the run holding `folds` (those it has not finished) and the finishing step. Each call
        makes a new study (`hms-folds-<run>-<n>`): a resumed run gets a fresh queue, never a second copy of a fold
        in the old one."""
        import optuna

        storage = open_storage(url, heartbeat, MAX_RETRY)
        taken = set(optuna.get_all_study_names(storage))
        name = next(f"hms-folds-{run_id}-{n}" for n in range(len(taken) + 1) if f"hms-folds-{run_id}-{n}" not in taken)
        with _quiet():
            study = optuna.create_study(study_name=name, storage=storage)
        study.set_user_attr("run_id", run_id)
        study.set_user_attr("folds", [int(f) for f in folds])
        for fold in [*folds, FINISH]:
            study.enqueue_trial({"fold": int(fold)}, skip_if_exists=False)
        return cls(study, heartbeat)

    @classmethod
    def open(cls, url: str, name: str, heartbeat: float) -> FoldQueue:
        import optuna

        storage = open_storage(url, heartbeat, MAX_RETRY)
        if name not in optuna.get_all_study_names(storage):
            raise QueueError(f"no fold queue {name!r} in {_redact(url)} (give the storage the run was started with: cv.queue=...)")
        with _quiet():
            return cls(optuna.load_study(study_name=name, storage=storage), heartbeat)

    @property
    def name(self) -> str:
        return self.study.study_name

    @property
    def folds(self) -> list[int]:
        return list(self.study.user_attrs["folds"])

    def trials(self):
        return self.study.get_trials(deepcopy=False)

    @staticmethod
    def fold_of(trial) -> int:
        return int(trial.system_attrs["fixed_params"]["fold"])

    def reap(self) -> list:
        """Fail the trials whose worker stopped sending heartbeats (a copy of each is queued again); returns them."""
        import optuna

        before = {t.number for t in self.trials() if t.state == optuna.trial.TrialState.FAIL}
        try:
            with _quiet():
                optuna.storages.fail_stale_trials(self.study)
        except Exception:  # noqa: BLE001 - a busy SQLite file: the next look fails them
            return []
        return [t for t in self.trials() if t.state == optuna.trial.TrialState.FAIL and t.number not in before
                and "hms.error" not in t.user_attrs and "hms.released" not in t.user_attrs]

    def complete_folds(self) -> set[int]:
        import optuna

        return {self.fold_of(t) for t in self.trials() if t.state == optuna.trial.TrialState.COMPLETE}

    def errors(self) -> list[str]:
        """Folds that failed with an error of their own (each fails the run; a dead worker's fold is retried), and
        folds whose workers died more times than they are retried (never a run that waits for them forever)."""
        import collections

        import optuna

        trials = self.trials()
        errors = [f"fold {self.fold_of(t)}: {t.user_attrs['hms.error']}" for t in trials if "hms.error" in t.user_attrs]
        deaths = collections.Counter(self.fold_of(t) for t in trials if t.state == optuna.trial.TrialState.FAIL
                                     and "hms.error" not in t.user_attrs and "hms.released" not in t.user_attrs)
        errors += [f"fold {fold}: its worker died {count} times (no heartbeat), so it is not claimed again"
                   for fold, count in sorted(deaths.items()) if count > MAX_RETRY]
        return errors

    def finished(self) -> bool:
        return FINISH in self.complete_folds()

    def claim(self) -> Claim | None:
        """A WAITING fold trial, or the finishing step once every fold is complete; None if there is none now."""
        import optuna

        waiting = [t for t in self.trials() if t.state == optuna.trial.TrialState.WAITING]
        done = self.complete_folds()
        ready = [t for t in waiting if self.fold_of(t) != FINISH]
        if not ready and set(self.folds) <= done:
            ready = [t for t in waiting if self.fold_of(t) == FINISH]
        for trial in sorted(ready, key=lambda t: t.number):
            try:
                won = self._take(trial._trial_id)
            except Exception:  # noqa: BLE001 - a locked SQLite file: another worker is claiming; look again later
                return None
            if won:
                self.storage.record_heartbeat(trial._trial_id)
                return Claim(trial._trial_id, trial.number, self.fold_of(trial))
        return None

    def _take(self, trial_id: int) -> bool:
        """WAITING -> RUNNING as one conditional UPDATE on Optuna's trials table, True for the one worker whose
        statement changed the row. Optuna's own `set_trial_state_values` reads the state and then writes it, and under
        SQLite (pysqlite runs the read outside the write's transaction) two workers both saw WAITING and both won."""
        import datetime

        import sqlalchemy

        backend = getattr(self.storage, "_backend", self.storage)
        with backend.engine.begin() as connection:
            changed = connection.execute(
                sqlalchemy.text("UPDATE trials SET state = 'RUNNING', datetime_start = :now "
                                "WHERE trial_id = :trial AND state = 'WAITING'"),
                {"now": datetime.datetime.now(), "trial": trial_id})
            return changed.rowcount == 1

    @contextmanager
    def next_claim(self):
        """The next claimable step (`claim`), held (`holding`) while the block runs; None when none is claimable now.
        An interrupt (SIGTERM, Ctrl-C) that comes while the claim is taken waits until the block holds it, so that it
        gives the fold back at once instead of leaving it RUNNING until its heartbeat lapses; a worker told to stop
        (a SIGTERM whose raise Python dropped) claims nothing more."""
        from .tracking import hold_signals, raise_if_preempted, release_signals

        raise_if_preempted()
        hold_signals()
        try:
            claim = self.claim()
        except BaseException:
            release_signals()
            raise
        if claim is None:
            release_signals()
            yield None
            return
        with self.holding(claim, held=True):
            yield claim

    @contextmanager
    def holding(self, claim: Claim, held: bool = False):
        """Heartbeats for the claim while the block runs; the trial COMPLETE after it, or FAIL with the error. `held`:
        the claim was taken under `hold_signals`, released once the block holds it (an interrupt that came meanwhile
        is raised there, and gives the fold back)."""
        import optuna

        from .tracking import release_signals

        stop = threading.Event()

        def beat():
            while not stop.wait(self.heartbeat):
                try:
                    self.storage.record_heartbeat(claim.trial_id)
                except Exception:  # noqa: BLE001 - one missed beat; the grace period is three
                    pass

        thread = threading.Thread(target=beat, name=f"heartbeat-trial{claim.number}", daemon=True)
        thread.start()
        try:
            if held:
                release_signals()
            yield
        except BaseException as error:
            stop.set()
            if isinstance(error, Exception):
                self.storage.set_trial_user_attr(claim.trial_id, "hms.error", f"{type(error).__name__}: {error}"[:2000])
                self.storage.set_trial_state_values(claim.trial_id, optuna.trial.TrialState.FAIL)
            elif isinstance(error, KeyboardInterrupt):  # SIGTERM or Ctrl-C: the fold is given back now, not after the grace
                self.release(claim, str(error) or type(error).__name__)
                error.released_fold = claim.fold
            raise
        else:
            stop.set()
            self.storage.set_trial_state_values(claim.trial_id, optuna.trial.TrialState.COMPLETE, values=[0.0])
        finally:
            stop.set()
            thread.join(timeout=5)

    def release(self, claim: Claim, why: str) -> None:
        """Give a claimed fold back (its worker was interrupted): a copy of it waits for the next worker, and the claim
        ends FAIL marked `hms.released` (not an error of the fold, and not a death counted against MAX_RETRY)."""
        import optuna

        self.study.enqueue_trial({"fold": int(claim.fold)}, skip_if_exists=False)
        self.storage.set_trial_user_attr(claim.trial_id, "hms.released", why[:500])
        self.storage.set_trial_state_values(claim.trial_id, optuna.trial.TrialState.FAIL)

    def note(self, claim: Claim, key: str, value) -> None:
        self.storage.set_trial_user_attr(claim.trial_id, key, value)

    def counts(self) -> dict:
        import collections

        return dict(collections.Counter(t.state.name for t in self.trials()))


def open_storage(url: str, heartbeat: float = HEARTBEAT_SECONDS, max_retry: int = 1):
    """Optuna storage for a URL: an RDB (SQLite, PostgreSQL ...) with heartbeats, so that the trial of a worker
    that died is failed and its parameters retried (`RetryHeartbeatStaleTrialCallback`, at most `max_retry` times);
    or a journal file (`*.journal` / `journal:PATH`, no heartbeats)."""
    import optuna

    if url.startswith("journal:") or url.endswith(".journal"):
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    import random
    import time
    import warnings

    from sqlalchemy.exc import SQLAlchemyError

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=max(1, int(heartbeat)), grace_period=max(2, int(3 * heartbeat)),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry))
        except SQLAlchemyError:  # workers starting together race to create the tables: the loser retries
            if attempt == 4:
                raise
            time.sleep(random.uniform(0.5, 2.0))


def _redact(url: str) -> str:
    from .tracking import redact

    return redact(url)


@contextmanager
def _quiet():
    import logging
    import warnings

    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)

