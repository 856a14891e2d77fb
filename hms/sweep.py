"""`python -m hms.sweep launch|status|best`: Optuna searches over Hydra overrides, pruned fold by fold.

A search space is a YAML file in `sweeps/`:

    study: tiny                  # the study's name (default: the file's name)
    direction: minimize
    sampler: {name: tpe, seed: 0}                # tpe or random
    pruner: {name: median, n_startup_trials: 1}  # median or none
    base: [trainer.epochs=2]                     # overrides every trial gets
    params:
      backbone: {type: categorical, choices: [efficientnet_b0, efficientnet_b1]}
      trainer.batch_size: {type: int, low: 8, high: 32, step: 8}
      schedule.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true, when: {schedule: cosine}}

Each trial composes base + sampled + trailing overrides, runs one `hms.train` CV run and reports
the mean KL of its finished folds after each fold, so the pruner can stop it early.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

from . import logs
from .tracking import Preempted, ending_on_signals, wait_passing_signals
from .config import compose
from .devices import visible_gpus
from .search import (HEARTBEAT_SECONDS, SpaceError, StudyError, best, check_composes, default_storage, launch, load_space,
                     prepare_study, status)


def _workers(args, trailing) -> int:
    """Start `--workers N` launch processes on one study, each pinned to its own GPU(s) where there are any."""
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g] or visible_gpus()
    per = args.gpus_per_trial
    space = load_space(args.space)
    check_composes(space, trailing)
    storage = args.storage or default_storage(args.study or space.study, compose([*space.base, *trailing]).paths.sweeps)
    prepare_study(space, storage, args.study or space.study, trailing)  # once, before the workers race to create them
    options = ["--trials", str(args.trials), "--storage", storage, "--heartbeat", str(args.heartbeat),
               *(["--study", args.study] if args.study else [])]
    processes = []
    for w in range(args.workers):
        env = dict(os.environ)
        if gpus:
            start = (w * per) % len(gpus)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus[start:start + per])
        command = [sys.executable, "-m", "hms.sweep", "launch", str(args.space), *options, "--worker", str(args.worker + w),
                   "--", *trailing]
        processes.append(subprocess.Popen(command, env=env))
    # Ended (SIGTERM, Ctrl-C), it ends its workers too, each queueing its trial's parameters again.
    return max(wait_passing_signals(processes))


def main(argv=None) -> int:
    """The `python -m hms.sweep` command line."""
    logs.install()
    argv = list(sys.argv[1:] if argv is None else argv)
    trailing = []
    if "--" in argv:
        trailing = argv[argv.index("--") + 1:]
        argv = argv[:argv.index("--")]
    parser = argparse.ArgumentParser(prog="python -m hms.sweep", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("launch", help="run trials of a search space (continues the study if it exists)")
    run.add_argument("space")
    run.add_argument("--trials", type=int, default=10, help="the study's total number of finished trials")
    run.add_argument("--storage", default=None, help="Optuna storage URL (default: sqlite:///sweeps/STUDY.db)")
    run.add_argument("--study", default=None, help="study name (default: the space's)")
    run.add_argument("--workers", type=int, default=1, help="local worker processes sharing the study")
    run.add_argument("--gpus-per-trial", type=int, default=1)
    run.add_argument("--worker", type=int, default=0, help="this worker's index (offsets the sampler seed); "
                     "give each machine its own when many share a study")
    run.add_argument("--heartbeat", type=float, default=HEARTBEAT_SECONDS,
                     help="seconds between a running trial's heartbeats; a trial silent for 3x this long is failed and retried")
    for name in ("status", "best"):
        sub = commands.add_parser(name)
        sub.add_argument("--study", required=True)
        sub.add_argument("--storage", default=None)
    args = parser.parse_args(argv)
    try:
        if args.command == "launch":
            with ending_on_signals():
                if args.workers > 1:
                    return _workers(args, trailing)
                launch(args.space, args.trials, args.storage, args.study, trailing, args.worker, args.heartbeat)
        else:
            storage = args.storage or default_storage(args.study, compose(trailing).paths.sweeps)
            print((status if args.command == "status" else best)(storage, args.study))
    except SpaceError as error:
        print(f"search space error: {error}", file=sys.stderr)
        return 2
    except StudyError as error:
        print(f"study error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:  # SIGTERM (Preempted) or Ctrl-C
        print(f"{error or 'ended by SIGINT (Ctrl-C)'}: this worker stopped; its trial's runs are KILLED and its parameters "
              "queued again; relaunch the sweep to go on", file=sys.stderr)
        return 143 if isinstance(error, Preempted) else 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
