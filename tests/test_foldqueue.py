"""hms.foldqueue with real processes racing for claims on one SQLite study storage."""

import multiprocessing

import pytest

pytestmark = pytest.mark.slow  # spawned processes

FOLDS = 16


def _claim_all(url, name, barrier, claimed):
    from hms.foldqueue import FINISH, FoldQueue

    queue = FoldQueue.open(url, name, heartbeat=5)
    barrier.wait(timeout=120)  # every worker starts claiming at the same moment
    idle = 0
    while not queue.finished() and idle < 400:
        claim = queue.claim()
        if claim is None:
            idle += 1
            continue
        with queue.holding(claim):
            claimed.put(claim.fold)
        if claim.fold == FINISH:
            break


@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_racing_workers_claim_every_fold_and_the_finish_exactly_once(store, tmp_path):
    """4 workers start claiming 16 folds at once. Optuna's own WAITING -> RUNNING under SQLite let two of them take
    the same trial; the queue's claim must not, on SQLite (one machine) or PostgreSQL (many)."""
    import os
    import uuid

    from hms.foldqueue import FINISH, FoldQueue, ready

    if store == "sqlite":
        url = ready(f"sqlite:///{tmp_path}/folds.db")
    else:
        url = os.environ.get("HMS_TEST_POSTGRES_URL")
        if not url:
            pytest.fail("HMS_TEST_POSTGRES_URL is not set: run the tests as the README says (tests/with_postgres.sh python -m pytest)")
    queue = FoldQueue.create(url, f"run-{uuid.uuid4().hex[:8]}", list(range(FOLDS)), heartbeat=5)
    context = multiprocessing.get_context("spawn")
    barrier, claimed = context.Barrier(4), context.Queue()
    workers = [context.Process(target=_claim_all, args=(url, queue.name, barrier, claimed)) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(300)
    assert [w.exitcode for w in workers] == [0] * 4
    folds = []
    while not claimed.empty():
        folds.append(claimed.get())
    assert sorted(folds) == sorted([*range(FOLDS), FINISH])  # none twice, none missed
    assert queue.counts() == {"COMPLETE": FOLDS + 1}


def _claim_and_die(url, name):
    """A worker process that claims a fold and dies at once (os._exit: no heartbeat thread, no goodbye)."""
    import os

    from hms.foldqueue import FoldQueue

    claim = FoldQueue.open(url, name, heartbeat=1).claim()
    os._exit(0 if claim is not None else 3)


def test_a_fold_whose_workers_keep_dying_fails_the_run_instead_of_waiting_forever(tmp_path):
    """Each claim of fold 0 is taken by a process that dies at once. The fold is queued again MAX_RETRY times; after
    one death more it is not claimed again and the queue reports it as an error (the workers then fail the run),
    where a queue with no bound on retries, or one that did not report it, would leave the run waiting forever."""
    import time

    from hms.foldqueue import MAX_RETRY, FoldQueue, ready

    url = ready(f"sqlite:///{tmp_path}/folds.db")
    queue = FoldQueue.create(url, "run", [0], heartbeat=1)
    context = multiprocessing.get_context("spawn")
    for death in range(MAX_RETRY + 1):
        assert not queue.errors()
        worker = context.Process(target=_claim_and_die, args=(url, queue.name))
        worker.start()
        worker.join(timeout=120)
        assert worker.exitcode == 0  # it claimed the fold (the first time, or its retry) and died
        time.sleep(4.5)  # three missed heartbeats (SQLite tells the time in whole seconds)
        assert [queue.fold_of(t) for t in queue.reap()] == [0]
    assert queue.claim() is None
    assert queue.errors() == [f"fold 0: its worker died {MAX_RETRY + 1} times (no heartbeat), so it is not claimed again"]
