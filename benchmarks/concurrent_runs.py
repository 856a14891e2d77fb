"""Many CV runs writing to one tracking store at once: wall time, exit codes, the store's errors and retries, and
whether every run's records are complete, for 1, 2, 4 and 8 concurrent `python -m hms.train` processes.

    python benchmarks/concurrent_runs.py                                   # a fresh SQLite store for each count
    python benchmarks/concurrent_runs.py --store postgresql+psycopg2://postgres@127.0.0.1:5432/hms_load
    tests/with_postgres.sh python benchmarks/concurrent_runs.py --store postgres   # the throwaway server's database

Each run is the tiny 1D CNN (2 folds, 1 epoch) on a generated set; all runs share one feature cache, built by a
warm-up run before anything is timed. A PostgreSQL store gets a fresh database for each count. "errors" counts the
lines in the runs' output that name a database error (locked, deadlock, OperationalError, IntegrityError, Traceback);
"retries" counts `hms`'s own retry messages; "incomplete" counts runs whose parent is not FINISHED with `cv_kl`, or
that lack a FINISHED fold run per fold, or OOF predictions, and runs left RUNNING.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> None:
    from tests.helpers import LOAD_RUN, concurrent_runs, fresh_postgres_database, store_problems

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--store", default="sqlite", help="sqlite (a fresh file per count), postgres (HMS_TEST_POSTGRES_URL's "
                                                          "server) or a PostgreSQL URL whose server may create databases")
    parser.add_argument("--eegs", type=int, default=40)
    args = parser.parse_args()
    from hms.synthetic import SynthSpec, generate

    server = os.environ.get("HMS_TEST_POSTGRES_URL") if args.store == "postgres" else args.store
    if args.store == "postgres" and not server:
        sys.exit("--store postgres needs HMS_TEST_POSTGRES_URL (run it under tests/with_postgres.sh)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, cache = tmp / "data", tmp / "cache"
        generate(root, SynthSpec(eegs=args.eegs, patients=max(4, args.eegs // 4), seed=11, test_eegs=4))
        warm = concurrent_runs(1, f"sqlite:///{tmp}/warm/mlflow.db", root, cache, tmp / "warm")
        if warm.codes != [0]:
            sys.exit(f"the warm-up run failed:\n{warm.outputs[0][-3000:]}")
        print(f"{LOAD_RUN[0]} {LOAD_RUN[1]}, 2 folds, 1 epoch, {args.eegs} eeg_ids, {os.cpu_count()} cores, store: "
              f"{'a fresh SQLite file' if args.store == 'sqlite' else 'a fresh PostgreSQL database'} per count\n")
        print(f"{'runs':>4}  {'wall s':>7}  {'s per run':>9}  {'failed':>6}  {'errors':>6}  {'retries':>7}  {'incomplete':>10}")
        for n in args.runs:
            folder = tmp / f"n{n}"
            uri = f"sqlite:///{folder}/mlflow.db" if args.store == "sqlite" else fresh_postgres_database(server, f"hms_load_{n}_{os.getpid()}")
            start = time.perf_counter()
            result = concurrent_runs(n, uri, root, cache, folder)
            wall = time.perf_counter() - start
            problems = store_problems(uri, n, folds=2)
            print(f"{n:>4}  {wall:>7.1f}  {wall / n:>9.1f}  {sum(c != 0 for c in result.codes):>6}  {result.errors:>6}  "
                  f"{result.retries:>7}  {len(problems):>10}")
            for problem in problems[:5]:
                print(f"      {problem}")


if __name__ == "__main__":
    main()
