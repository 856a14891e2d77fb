"""`python -m hms.train [overrides]`: one cross-validated experiment, recorded in MLflow (library: `hms.cv`)."""

from __future__ import annotations

import os
import sys

import hydra
from omegaconf import DictConfig

from .config import CONF_DIR, ConfigError, validate


def main() -> float:
    """The command's entry point (`python -m`, the console script): logging and the config schemas, then Hydra."""
    from . import logs, schema

    logs.install()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per small artifact is noise here
    schema.register()
    return _main()


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _main(cfg: DictConfig) -> float:
    """Compose, validate and run one cross-validated experiment; returns its CV KL."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow is imported, also under `hms-train`
    from hydra.core.hydra_config import HydraConfig

    from .cv import run_cv
    from .dataset import DataError
    from .disk import DiskFull
    from .foldqueue import FINISH, QueueError

    from .tracking import Preempted, ending_on_signals

    try:
        validate(cfg)
        with ending_on_signals():
            return run_cv(cfg, overrides=list(HydraConfig.get().overrides.task))
    except KeyboardInterrupt as error:  # SIGTERM (Preempted) or Ctrl-C: the runs are marked KILLED, finished folds kept
        run_id = getattr(error, "run_id", None)
        how = str(error) if isinstance(error, Preempted) else "ended by SIGINT (Ctrl-C)"
        if cfg.get("join"):
            fold = getattr(error, "released_fold", None)
            given = ("it held no fold" if fold is None else
                     "the run's finishing step is queued again for the run's other workers" if fold == FINISH else
                     f"its fold {fold} is queued again for the run's other workers")
            print(f"{how}: this worker stopped; {given}", file=sys.stderr)
        elif run_id:
            print(f"{how}: run {run_id} is marked KILLED; the folds it finished are kept. Continue it with "
                  f"resume={run_id}", file=sys.stderr)
        else:
            print(how, file=sys.stderr)
        sys.exit(143 if isinstance(error, Preempted) else 130)
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        sys.exit(2)
    except DataError as error:
        print(f"data error: {error}", file=sys.stderr)
        sys.exit(1)
    except QueueError as error:
        print(f"fold queue: {error}", file=sys.stderr)
        sys.exit(1)
    except DiskFull as error:
        run_id = getattr(error, "run_id", None)
        print(f"disk full: {error}" + (f"\nRun {run_id} is marked FAILED; the folds it finished are kept (recorded, or in "
                                       f"{cfg.paths.spool}). Continue it with resume={run_id}" if run_id else ""), file=sys.stderr)
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)  # not through the interpreter's exit: h5py, after a write that failed, crashes the process there
    except Exception as error:
        from . import tracking

        if not tracking.unreachable(error):
            raise
        run_id = getattr(error, "run_id", None)
        print(f"tracking store {tracking.redact(tracking.tracking_uri(cfg.tracking))} did not answer after "
              f"{tracking.retry_bound()}: {str(error).splitlines()[0][:300]}\nFolds finished and not yet recorded are kept "
              f"under {cfg.paths.spool}; once the store answers, continue with "
              f"resume={run_id or '<the run id printed above>'} (they are recorded from there, not trained again)",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
