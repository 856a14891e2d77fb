"""hms's messages go through the `logging` module, under the `hms` logger.

- On the console they read as before: INFO lines on stdout, warnings and errors on stderr, with no
  prefix (the stream is looked up at each line, so redirections and test captures see them).
- `run_log` also writes every message of a run, with times, levels and the per-epoch lines that the
  console leaves to Keras' progress output, to a file that is uploaded to the run as
  `logs/<start time>.log`, also when the run fails.

Configure it as any logger: `logging.getLogger("hms").setLevel(logging.WARNING)` silences the INFO lines.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from pathlib import Path

ROOT = "hms"
FILE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Console(logging.StreamHandler):
    """stdout for INFO and below, stderr for warnings and errors: whichever sys.stdout/sys.stderr are now."""

    def __init__(self):
        self._warning = False
        super().__init__()
        self.setLevel(logging.INFO)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr if self._warning else sys.stdout

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ assigns one; the property decides
        pass

    def emit(self, record):
        self._warning = record.levelno >= logging.WARNING
        super().emit(record)


def install() -> logging.Logger:
    """Put the console handler on the `hms` logger (idempotent): each command calls it where it starts; a program
    that uses hms as a library configures logging its own way (or calls this)."""
    logger = logging.getLogger(ROOT)
    if not any(isinstance(h, _Console) for h in logger.handlers):
        logger.addHandler(_Console())
        logger.setLevel(logging.DEBUG)  # the handlers choose: the console shows INFO and up, run files everything
        logger.propagate = False  # a root handler (Hydra's, a notebook's) would print each line twice
    return logger



def get(name: str) -> logging.Logger:
    """The logger of an hms module (`get(__name__)`)."""
    return logging.getLogger(name if name.startswith(ROOT) else f"{ROOT}.{name}")


@contextlib.contextmanager
def run_log(client, run_id: str, prefix: str = ""):
    """Write the `hms` messages of the block, DEBUG and up, to a file uploaded to `run_id` as `logs/<start>.log`
    when the block ends, also when it raises (the error is logged first)."""
    logger = logging.getLogger(ROOT)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}.log"
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setLevel(logging.DEBUG)
        handler.setFormatter(logging.Formatter(FILE_FORMAT))
        logger.addHandler(handler)
        try:
            yield path
        except BaseException as error:
            logger.debug("run %s ends with %s: %s", run_id, type(error).__name__, error, exc_info=not isinstance(error, KeyboardInterrupt))
            raise
        finally:
            logger.removeHandler(handler)
            handler.close()
            try:
                client.log_artifact(run_id, str(path), "logs")
            except Exception as upload:  # a store that has gone away must not hide the run's own error
                logger.warning("the run log was not uploaded to run %s: %s", run_id, upload)
