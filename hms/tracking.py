"""MLflow records of a run: experiment, CV parent run, fold child runs, artifacts, UI address."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from . import logs

log = logs.get(__name__)
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# The runs table as hms's runs are best read: MLflow's UI opens a "shared view" stored as an experiment tag
# (`mlflow.sharedViewState.<key>`, JSON of its table state) for `?viewStateShareKey=<key>`. Column keys are MLflow's
# canonical ones: type.`name`.
SHARED_VIEW_KEY = "hms"
SHARED_VIEW_TAG = f"mlflow.sharedViewState.{SHARED_VIEW_KEY}"
SHARED_VIEW = json.dumps({"selectedColumns": [
    "attributes.`Created`", "attributes.`Duration`", "metrics.`cv_kl`", "metrics.`prior_kl`", "metrics.`baseline_kl`",
    "metrics.`cv_kl_std`", "tags.`hms.learned`", "params.`backbone.name`", "params.`input.mix`", "params.`trainer.epochs`",
    "metrics.`kl`"]})


def tracking_uri(tracking) -> str:
    """`tracking.uri` if set, else MLFLOW_TRACKING_URI, else `tracking.store` (a config's `paths.tracking`)."""
    uri = tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI") or tracking.get("store")
    if not uri:
        raise ValueError("no MLflow store: set tracking.uri (or MLFLOW_TRACKING_URI, or tracking.store)")
    return uri


def client_for(tracking):
    """An MlflowClient on the configured store. A SQLite file is created, schema and all, by one process at a
    time under a lock beside it: two runs starting together on a fresh file would otherwise both migrate it."""
    from mlflow import MlflowClient

    uri = tracking_uri(tracking)
    database = _sqlite_file(uri)
    if database is None:
        if _server_database(uri):
            return _schema_under_server_lock(uri)
        return MlflowClient(uri)
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(database.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _schema_ready(uri, database)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


SCHEMA_WAIT_SECONDS = 120  # how long a fresh store's schema may take another client (mlflow ui, a notebook) to create
SCHEMA_STILL_SECONDS = 15  # a schema not at MLflow's version whose file has not changed this long is nobody's work


def _schema_ready(uri: str, database: Path):
    """A client on the store once its schema is whole. MLflow creates and migrates a fresh SQLite file's schema in
    whichever client opens it first, without a lock, and two clients doing it at once break it ('table ... already
    exists', an alembic version row not found, a half-migrated file). So hms never migrates a file another client may
    be migrating: a missing file is made aside (in a process of its own) and linked into place only if no file has
    appeared meanwhile; an existing one is waited for, read-only, until its schema is at MLflow's version."""
    from mlflow import MlflowClient

    if not database.exists():
        staging = database.with_name(f".{database.name}.{os.getpid()}.creating")
        staging.unlink(missing_ok=True)
        try:
            _make_schema(staging)
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        try:
            os.link(staging, database)  # atomic, and never over a file another client has made meanwhile
        except FileExistsError:
            pass
        finally:
            staging.unlink(missing_ok=True)
    _wait_for_schema(database)
    client = MlflowClient(uri)
    client.search_experiments(max_results=1)
    return client


SERVER_LOCK = 0x686D73  # the advisory lock's key ('hms') under which one hms process at a time opens a server database


def _server_database(uri: str) -> str | None:
    """'postgresql' or 'mysql' for a tracking URI that is such a database (MLflow's SQLAlchemy store), else None."""
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    return {"postgresql": "postgresql", "postgres": "postgresql", "mysql": "mysql"}.get(scheme)


def _schema_under_server_lock(uri: str):
    """A client on a PostgreSQL or MySQL store, opened while this process holds the database's advisory lock. MLflow
    creates a fresh database's tables in whichever client opens it first, without a lock: runs starting together on
    a new database (a cluster's first sweep) collided there ('duplicate key value violates unique constraint
    "pg_type_typname_nsp_index"'). Under the lock, the first creates them and the others find them made."""
    import sqlalchemy
    from mlflow import MlflowClient

    dialect = _server_database(uri)
    take, give = {"postgresql": ("SELECT pg_advisory_lock(:key)", "SELECT pg_advisory_unlock(:key)"),
                  "mysql": ("SELECT GET_LOCK(CAST(:key AS CHAR), 600)", "SELECT RELEASE_LOCK(CAST(:key AS CHAR))")}[dialect]
    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sqlalchemy.text(take), {"key": SERVER_LOCK})
            try:
                client = MlflowClient(uri)
                client.search_experiments(max_results=1)  # the store (and a fresh database's schema) is made here
            finally:
                connection.execute(sqlalchemy.text(give), {"key": SERVER_LOCK})
    finally:
        engine.dispose()
    return client


def _make_schema(path: Path) -> None:
    """MLflow's schema in a new SQLite file, made as MLflow makes it for a fresh store (tables, then its migrations),
    through an engine closed afterwards (nothing of this process keeps the file open once it is linked into place).
    The migrations take seconds; the empty schema they leave is kept once per MLflow version and schema revision
    (`schema_template`) and copied for the next fresh store."""
    import shutil

    import sqlalchemy
    from mlflow.store.db.utils import _initialize_tables

    template = schema_template()
    if template is not None and _schema_version(template) == _schema_head():
        shutil.copyfile(template, path)
        return
    engine = sqlalchemy.create_engine(f"sqlite:///{path}")
    try:
        _initialize_tables(engine)
    finally:
        engine.dispose()
    if template is not None and _schema_version(path) == _schema_head():
        try:
            template.parent.mkdir(parents=True, exist_ok=True)
            staging = template.with_name(f".{template.name}.{os.getpid()}")
            shutil.copyfile(path, staging)
            os.replace(staging, template)  # whole, or not there
        except OSError as error:  # a read-only home, a full disk: the next store migrates again
            log.debug(f"could not keep the schema template {template}: {error}")


def schema_template() -> Path | None:
    """Where the empty SQLite schema of this MLflow version is kept: `HMS_SCHEMA_CACHE` (empty: none), else
    `$XDG_CACHE_HOME/hms` or `~/.cache/hms`; the file name holds MLflow's version and schema revision."""
    import mlflow

    folder = os.environ.get("HMS_SCHEMA_CACHE")
    if folder == "":
        return None
    if not folder:
        from .backends import user_cache

        folder = user_cache()
    folder = Path(folder)
    return folder / f"mlflow-{mlflow.__version__}-schema-{_schema_head()}.db"


@functools.lru_cache(maxsize=1)
def _schema_head() -> str:
    from mlflow.store.db.utils import _get_latest_schema_revision

    return _get_latest_schema_revision()


def _wait_for_schema(database: Path) -> None:
    """Until the SQLite file's schema is at MLflow's version (another client is making it); returns at once if it is,
    or once the file has stood still for SCHEMA_STILL_SECONDS (an old store: MLflow then says how to upgrade it)."""
    import time

    head = _schema_head()
    start = last_change = time.monotonic()
    seen, waited = None, False
    while True:
        version = _schema_version(database)
        if version == head:
            if waited:
                log.info(f"{database}: another client was creating its schema; ready after {time.monotonic() - start:.1f} s")
            return
        try:
            stat = database.stat()
            now = (stat.st_size, stat.st_mtime_ns)
        except FileNotFoundError:
            now = None
        if now != seen:
            seen, last_change = now, time.monotonic()
        if version is not None and time.monotonic() - last_change > SCHEMA_STILL_SECONDS:
            return  # an old schema nobody is migrating
        if time.monotonic() - start > SCHEMA_WAIT_SECONDS:
            raise RuntimeError(f"tracking store {database}: its schema is still being made after {SCHEMA_WAIT_SECONDS} s "
                               f"(version {version}, MLflow's is {head}); is another program stuck writing to it?")
        waited = True
        time.sleep(0.25)


def _schema_version(database: Path) -> str | None:
    """The alembic version of a whole schema in the SQLite file, read-only; None while it is missing or being made."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if "alembic_version" not in tables or any(t.startswith("_alembic_tmp") for t in tables):
                return None
            versions = db.execute("SELECT version_num FROM alembic_version").fetchall()
            return versions[0][0] if len(versions) == 1 else None
    except sqlite3.Error:
        return None


def _sqlite_file(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `mlruns/` beside a SQLite store's file (not in whatever
    folder the command ran from); None (the server's or MLflow's default) for other stores."""
    database = _sqlite_file(uri)
    return None if database is None else (database.resolve().parent / "mlruns").as_uri()


def experiment_id(client, name: str) -> str:
    """The experiment `name`, created (tagged as a model-development experiment) if it does not exist."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri),
                                            tags={**EXPERIMENT_KIND, SHARED_VIEW_TAG: SHARED_VIEW})
        except MlflowException:  # another process created it between our look and our insert
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if experiment.tags.get("mlflow.experimentKind") != EXPERIMENT_KIND["mlflow.experimentKind"]:
        client.set_experiment_tag(experiment.experiment_id, "mlflow.experimentKind", EXPERIMENT_KIND["mlflow.experimentKind"])
    if experiment.tags.get(SHARED_VIEW_TAG) != SHARED_VIEW:
        client.set_experiment_tag(experiment.experiment_id, SHARED_VIEW_TAG, SHARED_VIEW)
    return experiment.experiment_id


_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    """A URI with its password replaced by ***: `postgresql://user:***@host/db`."""
    return _CREDENTIALS.sub(r"\g<scheme>:***@", text)


def redacted(cfg: DictConfig) -> DictConfig:
    """A copy of a run config that can be recorded: a password in tracking.uri replaced by ***."""
    out = cfg.copy()
    if OmegaConf.select(out, "tracking.uri"):
        out.tracking.uri = redact(str(out.tracking.uri))
    return out


def flat_params(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as MLflow params: dotted keys, values as text (lists as YAML flow)."""
    out = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                out[name] = str(value)[:6000]

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


def log_params(client, run_id: str, params: dict[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, params=items[start:start + 100])


def log_model_folder(client, experiment_id: str, folder, **spec) -> str:
    """A folder as one MLflow logged model (`models:/<id>`): created with `spec` (name, source_run_id, model_type,
    params, tags), its files uploaded, then READY (FAILED if the upload fails). Returns the model id."""
    from . import disk

    logged = client.create_logged_model(experiment_id, **spec)
    try:
        try:
            client.log_model_artifacts(logged.model_id, str(folder))
        except OSError as error:
            if not disk.is_full(error):
                raise
            stored = local_artifacts(logged.artifact_location)
            disk.remove([stored] if stored else [])  # MLflow copies a folder file by file: what it copied goes
            needed = sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())
            raise disk.error(stored or logged.artifact_location, needed, error, f"logged model {logged.model_id}",
                             STORE_FULL) from None
    except BaseException:
        client.finalize_logged_model(logged.model_id, "FAILED")
        raise
    client.finalize_logged_model(logged.model_id, "READY")
    return logged.model_id


STORE_FULL = "Free some space there (or move the store's artifacts); nothing partial is kept"


def local_artifacts(uri: str) -> Path | None:
    """The folder behind a local artifact URI (a path or file://), None for a remote one."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(str(uri))
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path))
    return None


def log_artifact(client, run_id: str, local, artifact_path: str | None = None) -> None:
    """`client.log_artifact`, where a full artifact store is a `DiskFull` naming the file it was storing and its size.
    (MLflow stages a file and renames it into place, so nothing half written is left to remove.)"""
    from . import disk

    local = Path(local)
    try:
        client.log_artifact(run_id, str(local), artifact_path)
    except OSError as error:
        if not disk.is_full(error):
            raise
        root = client.get_run(run_id).info.artifact_uri
        stored = local_artifacts(root)
        target = stored.joinpath(*(artifact_path or "").split("/"), local.name) if stored else \
            f"{root.rstrip('/')}/{artifact_path + '/' if artifact_path else ''}{local.name}"
        raise disk.error(target, local.stat().st_size, error, f"run {run_id}'s artifact", STORE_FULL) from None


def log_frame(client, run_id: str, frame, name: str) -> None:
    """Log a DataFrame as a parquet artifact `name`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_parquet(path, index=False)
        log_artifact(client, run_id, path)


def read_frame(client, run_id: str, name: str):
    """Read back a parquet artifact logged with `log_frame`."""
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        return pd.read_parquet(client.download_artifacts(run_id, name, tmp))


def ui_address(tracking, experiment: str, run_id: str) -> str:
    """Where `mlflow ui` (or the tracking server) shows the run, on its runs table rather than the GenAI overview."""
    return f"{_ui_base(tracking)}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


def _ui_base(tracking) -> str:
    """The tracking server a URI names, else where `mlflow ui` serves by default."""
    uri = tracking_uri(tracking)
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else "http://127.0.0.1:5000"


@contextlib.contextmanager
def failing(client, run_id: str, interrupts: bool = True):
    """Inside the block, an error marks the run FAILED with the reason, then goes on; an interrupt (Ctrl-C, or SIGTERM
    as `Preempted`) marks it KILLED with the reason. `interrupts=False`: an interrupt leaves the run as it is (a fold
    worker's: the run goes on in the other workers)."""
    try:
        yield
    except BaseException as error:
        if interrupts or not isinstance(error, KeyboardInterrupt):
            try:
                fail_run(client, run_id, error)
            except Exception as also:  # noqa: BLE001 - the store itself is gone: say so, and keep the first error
                log.warning(f"could not mark run {run_id} as ended in the tracking store ({type(also).__name__}); "
                            "it shows RUNNING until the run is resumed")
            error.run_id = run_id  # the outermost run marked: the one to resume
        raise


def unreachable(error: BaseException) -> bool:
    """Whether an error is the tracking server not answering (after MLflow's own retries)."""
    import requests

    if isinstance(error, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
        return True
    text = str(error)
    return "Max retries exceeded" in text or "Failed to establish a new connection" in text


def retry_bound() -> str:
    """How long MLflow's HTTP client keeps retrying a request to a server that does not answer."""
    retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", 7))
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", 2))
    cap = 120.0  # urllib3's longest single backoff
    seconds = sum(min(cap, factor * 2 ** k) for k in range(retries))
    return f"{retries} retries over about {seconds:.0f} s (MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR)"


class Preempted(KeyboardInterrupt):
    """The process was sent SIGTERM (a scheduler ending or preempting the job): ends the command as Ctrl-C does."""


_PREEMPTED: list[str] = []  # the signal's message, once SIGTERM came inside `ending_on_signals`
_HELD = [0]  # how deep inside `hold_signals`: an interrupt that comes there is noted and raised on release
_INTERRUPTED: list[str] = []  # a Ctrl-C (SIGINT) that came while held


def raise_if_preempted() -> None:
    """Raise `Preempted` again if SIGTERM came: Python drops an exception raised while a garbage-collector callback
    or a `__del__` runs (seen: JAX's `_xla_gc_callback` under a fold worker, which then trained on, SIGTERM ignored,
    until its launcher's SIGKILL). Training calls this after every batch, and a fold worker before it claims a fold."""
    if _PREEMPTED:
        raise Preempted(_PREEMPTED[0])


def hold_signals() -> None:
    """From now until `release_signals`, SIGTERM and Ctrl-C (inside `ending_on_signals`) are noted, not raised: for
    steps that must not be cut between two writes (a fold worker's claim of a fold, and the block that gives it back
    on an interrupt)."""
    _HELD[0] += 1


def release_signals() -> None:
    """End a `hold_signals`; the interrupt that came meanwhile, if any, is raised here."""
    _HELD[0] = max(0, _HELD[0] - 1)
    if _HELD[0]:
        return
    if _INTERRUPTED:
        _INTERRUPTED.clear()
        raise KeyboardInterrupt
    raise_if_preempted()


@contextlib.contextmanager
def ending_on_signals():
    """Inside the block, SIGTERM raises `Preempted` (SIGINT raises KeyboardInterrupt, as always): every `failing` block
    on the way out marks its run KILLED with the signal's name, finished folds stay recorded, and the command exits
    with 128 + the signal's number. Between `hold_signals` and `release_signals` either waits for the release.
    Outside the main thread, nothing changes."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def preempt(number, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the way out must not be interrupted again
        _PREEMPTED.append(f"ended by {signal.Signals(number).name}")
        if not _HELD[0]:
            raise Preempted(_PREEMPTED[0])

    def interrupt(number, frame):
        if _HELD[0]:
            _INTERRUPTED.append("SIGINT")
            return
        raise KeyboardInterrupt

    _PREEMPTED.clear()
    _INTERRUPTED.clear()
    _HELD[0] = 0
    previous = signal.signal(signal.SIGTERM, preempt)
    previous_int = signal.signal(signal.SIGINT, interrupt) if signal.getsignal(signal.SIGINT) is signal.default_int_handler else None
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
        if previous_int is not None:
            signal.signal(signal.SIGINT, previous_int)
        _PREEMPTED.clear()
        _INTERRUPTED.clear()
        _HELD[0] = 0


def wait_passing_signals(processes) -> list[int]:
    """Wait for child processes (a launcher's workers); their exit codes. Interrupted (SIGTERM as `Preempted`, Ctrl-C),
    it ends them too (SIGTERM, then SIGKILL after 60 s) so each can mark its runs and give its work back, then goes on."""
    import subprocess

    try:
        return [p.wait() for p in processes]
    except KeyboardInterrupt:
        for p in processes:
            if p.poll() is None:
                p.terminate()
        for p in processes:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        raise


def log_figures(client, run_id: str, figures: dict, folder: str = "plots") -> None:
    """Draw each figure (`name.png` -> matplotlib figure) to a file and log it under `folder` of the run."""
    from .plots import save

    with tempfile.TemporaryDirectory() as tmp:
        for name, figure in figures.items():
            save(figure, Path(tmp) / name)
            log_artifact(client, run_id, Path(tmp) / name, folder)


def table_address(tracking, experiment: str) -> str:
    """The experiment's runs table with hms's columns (the CV KL beside its baselines, backbone, input): the shared
    view `experiment_id` keeps on the experiment. MLflow's UI reads a shared view only on the runs route
    (`#/experiments/<id>/runs`), not on the experiment's own address."""
    return f"{_ui_base(tracking)}/#/experiments/{experiment}/runs?viewStateShareKey={SHARED_VIEW_KEY}&workflowType=machine_learning"


def view_line(tracking, experiment: str, run_id: str) -> str:
    """The last lines of a command that recorded a run: how to open the store, the run's page, and the runs table."""
    return (f"view it: run `{ui_command(tracking)}` and open {ui_address(tracking, experiment, run_id)}\n"
            f"all runs, scores as columns: {table_address(tracking, experiment)}")


def ui_command(tracking) -> str:
    """The `mlflow ui` command that opens the store a run used (a server URI is opened as it is)."""
    uri = tracking_uri(tracking)
    if uri.startswith(("http://", "https://")):
        return f"open {uri}"
    database = _sqlite_file(uri)
    shown = f"sqlite:///{database.resolve()}" if database is not None else redact(uri)
    return f"mlflow ui --backend-store-uri {shown}"


def fail_run(client, run_id: str, error: BaseException) -> None:
    """Mark a run FAILED (KILLED where it was interrupted: Ctrl-C or SIGTERM) and record why."""
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    client.set_tag(run_id, "hms.error", message[:5000])
    client.set_terminated(run_id, "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED")


def run_tags(tags: dict) -> dict:
    """`tags` with the provenance MLflow's fluent runs carry: source name and type, git commit (when the
    command runs from a git checkout), user. Runs made with MlflowClient.create_run get none by themselves."""
    from mlflow.tracking.context.registry import resolve_tags

    return resolve_tags(dict(tags))


class SystemMetrics:
    """CPU, memory, disk, network (and GPU, with pynvml) of the machine sampled every `seconds` into a run's
    `system/` metrics while the block runs; `seconds` null or 0 turns it off."""

    def __init__(self, run_id: str, uri: str, seconds):
        self.monitor = None
        if seconds:
            import logging

            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # no start/stop chatter per run
            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=float(seconds), samples_before_logging=1,
                                                tracking_uri=uri)

    def __enter__(self):
        if self.monitor is not None:
            self.monitor.start()
        return self

    def __exit__(self, *exc):
        if self.monitor is not None:
            self.monitor.finish()
        return False


def log_dataset(client, run_id: str, frame, name: str, source: str, digest: str, context: str) -> None:
    """A table as an MLflow dataset input of the run (the UI's Datasets column): name, digest, source."""
    import warnings

    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # MLflow's hint about integer columns in an inferred schema
        entity = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest)._to_mlflow_entity()
    inputs = [DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)])]
    for attempt in range(5):
        try:
            client.log_inputs(run_id, datasets=inputs)
            return
        except Exception as error:  # noqa: BLE001 - only a lost insert race is retried
            # MLflow looks the dataset up, then inserts it: two runs logging the same new dataset at once race, and
            # the loser's transaction fails on the unique key and rolls back. Again, it finds the winner's row.
            if attempt == 4 or not _lost_insert_race(error):
                raise
            log.info(f"dataset {name}: another run logged it at the same moment; retrying ({attempt + 1} of 4)")


def _lost_insert_race(error: BaseException) -> bool:
    from sqlalchemy.exc import IntegrityError

    text = str(error)
    return isinstance(error.__cause__, IntegrityError) or "UNIQUE constraint failed" in text or "duplicate key value" in text
