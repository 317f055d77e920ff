"""The MLflow adapter: the only module of lossbench that imports MLflow or reads its objects.

Callers get :class:`RunRecord` values and call methods named for what they mean
(``latest_cell_run``, ``runs_of``, ``kill``, ``read_table``); no other module sees an MLflow
run object, a client or a filter string. :func:`serve` is the one way lossbench starts an
``mlflow server`` (the UI, and the matrix's local server for parallel cells).

Default store: SQLite at ``$LOSSBENCH_HOME/mlflow.db`` with artifacts in
``$LOSSBENCH_HOME/mlartifacts`` (MLflow 3 no longer accepts the old ``./mlruns`` file store).
``--tracking-uri http://host:port`` uses a tracking server instead; it is checked before
anything runs, so an unreachable server is one clear error, not a hang mid-training.

Credentials: a password-protected server takes ``http://user:password@host:port`` or, better
(nothing on a command line), MLflow's own ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``.
Wherever lossbench shows or stores a URI or an error (messages, run tags, reports, command
lines) it goes through :func:`redact` first, which masks the password.

A fresh SQLite store is created (tables, migrations, the experiment) by one process at a time,
under ``$LOSSBENCH_HOME/mlflow.db.lock``: cells started at once do not race MLflow's migrations.

Metrics and params are written with ``log_batch`` (one call per epoch, not one per metric:
a single-metric call costs ~9 ms on SQLite and 20–60 ms against a server).

Every call into a database store (SQLite, PostgreSQL) holds Ctrl-C and SIGTERM off until it returns
(:func:`lossbench.processes.deferred_interrupts`): an interrupt in the middle of a write would leave
the SQLite store locked, and the interrupted run could not be marked KILLED.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossbench import paths
from lossbench.errors import LossbenchError
from lossbench.processes import deferred_interrupts

if TYPE_CHECKING:
    import pandas as pd

CELL_TAG = "lossbench.cell"
KIND_TAG = "lossbench.kind"
ERROR_TAG = "lossbench.error"
MATRIX_TAG = "lossbench.matrix"
PARENT_TAG = "mlflow.parentRunId"
NOTE_TAG = "mlflow.note.content"  # the run's (or experiment's) description in the MLflow UI
#: lossbench's experiments are model training (MLflow 3.17's UI itself picks GenAI or model training
#: per user, from the URL parameter ``workflowType=machine_learning`` or its saved choice: lossbench's
#: links carry the parameter).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
#: A saved runs-table view: loss, network, fold, seed and the test summaries first. MLflow 3.15+
#: keeps the Runs page's saved views ("Views" menu) as experiment tags ``mlflow.sharedViewState.<id>``
#: whose value is ``{"name", "createdAt", "updatedAt", "state": "deflate;" + base64(zlib(JSON))}``
#: (what the UI itself writes on "Save as new view"), the state holding ``selectedColumns`` and
#: ``columnOrder``. It applies when the Runs page is opened with ``?viewStateShareKey=<id>``
#: (``#/experiments/<id>/runs?…``: the bare ``#/experiments/<id>?…`` redirects and drops the key) or
#: is picked in the Views menu; MLflow has no per-experiment default columns.
VIEW_KEY = "lossbench"
VIEW_COLUMNS = (
    *(f"tags.`lossbench.{k}`" for k in ("loss", "network", "fold", "seed")),
    *(f"metrics.`{k}`" for k in ("test_dice_mean", "test_dice_pooled", "test_f1_pooled", "test_sensitivity_pooled",
                                 "test_fp_pooled", "best_val_dice", "best_epoch")),
    "attributes.`Dataset`", "attributes.`Models`", "attributes.`Duration`",
)


def _view_state_value() -> str:
    """The lossbench view's state as MLflow's UI stores it: ``deflate;`` + base64 of zlib'd JSON."""
    import base64
    import json
    import zlib

    state = {"searchFilter": "", "orderByKey": "attributes.start_time", "orderByAsc": False, "startTime": "ALL",
             "lifecycleFilter": "Active", "datasetsFilter": [], "modelVersionFilter": "All Runs",
             "selectedColumns": list(VIEW_COLUMNS), "columnOrder": list(VIEW_COLUMNS), "columnWidths": {}}
    packed = zlib.compress(json.dumps(state, separators=(",", ":")).encode("utf-8"))
    return "deflate;" + base64.b64encode(packed).decode("ascii")


def saved_view_state(value: str) -> dict[str, Any]:
    """The state of a saved view tag value (``mlflow.sharedViewState.<id>``), decoded."""
    import base64
    import json
    import zlib

    state = json.loads(value)["state"]
    if state.startswith("deflate;"):
        state = zlib.decompress(base64.b64decode(state[len("deflate;"):])).decode("utf-8")
    return json.loads(state)
MAX_PARAM_LENGTH = 6000  # MLflow 3's limit on a param value
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


class TrackingError(LossbenchError):
    """The tracking store cannot be used (unreachable server, unreadable store)."""


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # its warning that the pickle format (chosen on purpose for the logged model) can run code on load
    logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # we print where to look ourselves


USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^/@:\s]*):(?P<password>[^/@\s]*)@")


def redact(text: str) -> str:
    """``text`` with every URI password masked (``http://user:***@host``), and the password of
    ``MLFLOW_TRACKING_PASSWORD`` wherever it appears: use it on anything shown or stored."""
    out = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", str(text))
    secret = os.environ.get(PASSWORD_ENV, "")
    if len(secret) >= 3:
        out = out.replace(secret, "***")
    return out


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``http://user:pw@host:port/x`` -> (``http://host:port/x``, user, pw); no userinfo -> (uri, None, None)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("http", "https") or "@" not in parts.netloc:
        return uri, None, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    clean = urllib.parse.urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment))
    return clean, urllib.parse.unquote(user), urllib.parse.unquote(password)


def check_experiment_name(name: str) -> str:
    """Refuse an experiment name that would put its artifacts outside ``$LOSSBENCH_HOME/mlartifacts``."""
    bad = (not name or not name.strip() or name in (".", "..") or "/" in name or "\\" in name
           or "\0" in name or Path(name).is_absolute())
    if bad:
        raise LossbenchError(f"--experiment {name!r} is not a usable experiment name: it names the folder "
                             "mlartifacts/<experiment>, so it cannot be empty, '.' or '..', or contain '/' or '\\'")
    return name


TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"
DEFAULT_EXPERIMENT = "lossbench"


def resolve_tracking_uri(uri: str | None) -> str:
    """The store to use: ``uri``, else MLflow's own ``MLFLOW_TRACKING_URI``, else the embedded
    SQLite store under ``$LOSSBENCH_HOME``."""
    uri = uri or os.environ.get(TRACKING_URI_ENV, "").strip() or None
    if not uri:
        paths.ensure_home()
        return paths.default_tracking_uri()
    return uri


def default_experiment() -> str:
    """The experiment when none is given: MLflow's ``MLFLOW_EXPERIMENT_NAME``, else ``lossbench``."""
    return os.environ.get(EXPERIMENT_ENV, "").strip() or DEFAULT_EXPERIMENT


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For http(s) URIs, ask the server's ``/health`` endpoint; raise a one-line error if it is down.

    Credentials of the URI, or else ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, are
    sent as HTTP basic auth (what MLflow itself sends), so a password-protected server passes.
    """
    if not uri.startswith(("http://", "https://")):
        return
    import base64

    clean, user, password = split_credentials(uri)
    if user is None and os.environ.get(USERNAME_ENV):
        user, password = os.environ[USERNAME_ENV], os.environ.get(PASSWORD_ENV, "")
    request = urllib.request.Request(clean.rstrip("/") + "/health")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
        request.add_header("Authorization", f"Basic {token}")
    shown = redact(uri)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - user-given URI
            if response.status != 200:
                raise TrackingError(f"tracking server {shown} answered {response.status} on /health")
    except urllib.error.HTTPError as exc:
        hint = (f"; give the credentials with {USERNAME_ENV} and {PASSWORD_ENV}" if exc.code in (401, 403) else "")
        raise TrackingError(f"tracking server {shown} answered {exc.code} ({exc.reason}) on /health{hint}") from None
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
        reason = redact(str(getattr(exc, "reason", exc)))
        raise TrackingError(
            f"tracking server {shown} is unreachable ({reason}); start it (e.g. `mlflow server --host 127.0.0.1 "
            f"--port 5000`) or leave out --tracking-uri to use the embedded store in {paths.home()}"
        ) from None


@contextlib.contextmanager
def _store_init_lock(uri: str) -> Iterator[None]:
    """Hold ``<store>.lock`` while a process first opens a SQLite store; create it if it is missing."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    from filelock import FileLock

    db = Path(uri[len("sqlite:///"):])
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(db) + ".lock", timeout=600):
        if not db.exists():
            _create_store(db)
        yield


def _create_store(db: Path) -> None:
    """Create and migrate a SQLite store under a temporary name, then rename it into place: a
    process killed during MLflow's migrations leaves a temporary (removed here next time), never a
    half-migrated store that no later process could open."""
    from mlflow.tracking import MlflowClient

    from lossbench.fsio import atomic_path, remove_stale_temps

    remove_stale_temps(db.parent, db.name)
    for journal in db.parent.glob(f".{db.name}.*.tmp-journal"):  # SQLite's journal of a killed creation
        journal.unlink(missing_ok=True)
    with atomic_path(db) as tmp:
        client = MlflowClient(tracking_uri=f"sqlite:///{tmp}")  # creates the tables, runs the migrations
        with contextlib.suppress(Exception):
            client._tracking_client.store.engine.dispose()


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    elif isinstance(value, (list, tuple)):
        out[prefix] = ",".join(map(str, value))
    else:
        out[prefix] = str(value)


def flatten_params(params: Mapping[str, Any]) -> dict[str, str]:
    """Nested settings as MLflow params: ``{"loss": {"gamma": 2}}`` -> ``{"loss.gamma": "2"}``."""
    out: dict[str, str] = {}
    _flatten("", params, out)
    return {k: (v if len(v) <= MAX_PARAM_LENGTH else v[: MAX_PARAM_LENGTH - 3] + "...") for k, v in out.items()}


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """One run of the tracking store, in lossbench's words (a copy: it does not change with the store)."""

    id: str
    name: str
    status: str  # RUNNING | SCHEDULED | FINISHED | FAILED | KILLED
    tags: Mapping[str, str]
    params: Mapping[str, str]
    metrics: Mapping[str, float]
    start_time: int  # milliseconds since the epoch
    parent: str | None
    experiment_id: str
    deleted: bool = False

    @property
    def finished(self) -> bool:
        return self.status == "FINISHED"


def _record(run: Any) -> RunRecord:
    tags = dict(run.data.tags)
    return RunRecord(
        id=run.info.run_id, name=run.info.run_name or "", status=run.info.status, tags=tags,
        params=dict(run.data.params), metrics=dict(run.data.metrics), start_time=int(run.info.start_time or 0),
        parent=tags.get(PARENT_TAG) or None, experiment_id=str(run.info.experiment_id),
        deleted=run.info.lifecycle_stage == "deleted",
    )


def _quote(value: str) -> str:
    """A value inside a single-quoted MLflow filter string."""
    return str(value).replace("\\", "\\\\").replace("'", "\\'")


def _store_call(method: Any) -> Any:
    """A Tracker method that talks to the store: run under :meth:`Tracker._uninterrupted`."""

    @functools.wraps(method)
    def call(self: Tracker, *args: Any, **kwargs: Any) -> Any:
        with self._uninterrupted():
            return method(self, *args, **kwargs)

    return call


class Tracker:
    """One experiment in one tracking store."""

    def __init__(
        self, tracking_uri: str | None = None, experiment: str | None = None, *, create: bool = True
    ) -> None:
        """Open ``experiment`` (default: :func:`default_experiment`) in the store (default:
        :func:`resolve_tracking_uri`), creating it unless ``create`` is false (readers)."""
        _quiet_mlflow()
        experiment = experiment or default_experiment()
        check_experiment_name(experiment)
        uri, user, password = split_credentials(resolve_tracking_uri(tracking_uri))
        if user is not None:
            # credentials of the URI travel as MLflow's own variables (to this process's client and
            # to child cells), never on a command line or in a shown URI
            os.environ[USERNAME_ENV], os.environ[PASSWORD_ENV] = user, password or ""
        self.uri = uri
        check_reachable(self.uri)
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()  # mlflow sets its own logger levels when imported
        shown = redact(self.uri)
        try:  # the client creates and migrates a fresh SQLite store: not to be interrupted half-way
            with self._uninterrupted(), _store_init_lock(self.uri):
                self._client = MlflowClient(tracking_uri=self.uri)
                found = self._client.get_experiment_by_name(experiment)
                if found is None and not create:
                    raise TrackingError(f"no experiment {experiment!r} in {shown}")
                if found is None:
                    location = None
                    if self.uri.startswith("sqlite:"):
                        location = (paths.default_artifact_root() / experiment).as_uri()
                    self.experiment_id = self._client.create_experiment(experiment, artifact_location=location)
                else:
                    if found.lifecycle_stage == "deleted":
                        raise TrackingError(
                            f"experiment {experiment!r} is deleted in {shown}; restore it in the MLflow UI "
                            "or choose another --experiment"
                        )
                    self.experiment_id = found.experiment_id
                if create:
                    self._mark_model_training(dict(found.tags) if found is not None else {})
        except LossbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is one line for the user
            raise TrackingError(redact(f"cannot use tracking store {self.uri}: {type(exc).__name__}: {exc}")) from None
        self.experiment = experiment

    def _uninterrupted(self) -> contextlib.AbstractContextManager[None]:
        """Ctrl-C and SIGTERM held off until the block ends, for a database store (SQLite, PostgreSQL):
        interrupted inside a write, its connection keeps the transaction and the lock. A tracking
        server is left interruptible (its client may retry for minutes; the server keeps no state of
        an interrupted request)."""
        if self.uri.startswith(("http://", "https://")):
            return contextlib.nullcontext()
        return deferred_interrupts()

    @_store_call
    def _mark_model_training(self, tags: Mapping[str, str]) -> None:
        """Experiment tags (set once): a model-training experiment, the runs-table view, a description."""
        import json

        view_tag = f"mlflow.sharedViewState.{VIEW_KEY}"
        state = _view_state_value()
        current = tags.get(view_tag)
        try:
            same = current is not None and json.loads(current).get("state") == state
        except (ValueError, AttributeError):
            same = False
        now = int(time.time() * 1000)
        wanted = {
            EXPERIMENT_KIND_TAG: EXPERIMENT_KIND,
            view_tag: current if same else json.dumps(
                {"name": VIEW_KEY, "createdAt": now, "updatedAt": now, "state": state}, separators=(",", ":")),
        }
        old_link = f"(#/experiments/{self.experiment_id}?workflowType=machine_learning&viewStateShareKey={VIEW_KEY})"
        if NOTE_TAG not in tags:
            wanted[NOTE_TAG] = (
                "lossbench cells (loss × network × fold × seed) and comparisons. Runs table with loss, network, "
                f"fold, seed and the test summaries first: [lossbench view]({self.view_path()})")
        elif old_link in tags[NOTE_TAG]:  # the earlier link, which redirected and lost the view
            wanted[NOTE_TAG] = tags[NOTE_TAG].replace(old_link, f"({self.view_path()})")
        for key, value in wanted.items():
            if tags.get(key) != value:
                self._client.set_experiment_tag(self.experiment_id, key, value)

    def view_path(self) -> str:
        """``#/experiments/<id>/runs?…``: the Runs table in the lossbench view, model-training mode."""
        return f"#/experiments/{self.experiment_id}/runs?viewStateShareKey={VIEW_KEY}&workflowType=machine_learning"

    def view_url(self, base: str) -> str:
        """The experiment's runs table in the lossbench view, on the MLflow UI at ``base``."""
        return f"{base.rstrip('/')}/{self.view_path()}"

    @property
    def is_sqlite(self) -> bool:
        """The store is a SQLite file (one writer at a time)."""
        return self.uri.startswith("sqlite:")

    @property
    def artifact_location(self) -> str | None:
        """Where the experiment's artifacts go (``file:…``, ``mlflow-artifacts:/…``, ``s3://…``)."""
        try:
            return self._client.get_experiment(self.experiment_id).artifact_location
        except Exception:  # noqa: BLE001 - an unreadable experiment: unknown
            return None

    # -- finding runs -----------------------------------------------------------------------
    @_store_call
    def _search(self, filter_string: str, max_results: int | None = None) -> list[RunRecord]:
        """Active runs of the experiment matching ``filter_string``, newest first (all pages)."""
        runs: list[RunRecord] = []
        token = None
        try:
            while True:
                page_size = min(max_results, 1000) if max_results else 1000
                page = self._client.search_runs(
                    [self.experiment_id], filter_string=filter_string,
                    order_by=["attributes.start_time DESC"], max_results=page_size, page_token=token,
                )
                runs.extend(_record(r) for r in page)
                token = page.token
                if not token or (max_results and len(runs) >= max_results):
                    return runs[:max_results] if max_results else runs
        except Exception as exc:  # noqa: BLE001 - a broken store: one line
            raise TrackingError(f"cannot search runs in {self.uri}: {type(exc).__name__}: {exc}") from None

    def runs_of(self, *, kind: str | None = None, parent: str | None = None,
                tags: Mapping[str, str] | None = None) -> list[RunRecord]:
        """Active runs of this experiment, newest first: of a ``kind`` (tag ``lossbench.kind``),
        children of ``parent``, and carrying every tag of ``tags``."""
        wanted = dict(tags or {})
        if kind is not None:
            wanted[KIND_TAG] = kind
        if parent is not None:
            wanted[PARENT_TAG] = parent
        return self._search(" and ".join(f"tags.`{k}` = '{_quote(v)}'" for k, v in wanted.items()))

    def latest_cell_run(self, identity: str) -> RunRecord | None:
        """The newest run of the cell with this identity (``lossbench.cell`` tag), or None."""
        found = self._search(f"tags.`{CELL_TAG}` = '{_quote(identity)}'", max_results=1)
        return found[0] if found else None

    def find_matrix_parent(self, matrix_id: str) -> RunRecord | None:
        """The newest parent run of the matrix ``matrix_id``, or None."""
        found = self._search(f"tags.`{MATRIX_TAG}` = '{_quote(matrix_id)}'", max_results=1)
        return found[0] if found else None

    @_store_call
    def run(self, run_id: str) -> RunRecord:
        """The run ``run_id`` (any experiment of the store); a one-line error if there is none."""
        try:
            return _record(self._client.get_run(run_id))
        except Exception:  # noqa: BLE001 - MlflowException RESOURCE_DOES_NOT_EXIST and friends
            raise TrackingError(f"run {run_id!r} does not exist in {self.uri}") from None

    # -- run life cycle ---------------------------------------------------------------------
    @_store_call
    def start_run(self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self._client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    @_store_call
    def reopen(self, run_id: str) -> None:
        """Mark an interrupted or failed run as running again (resume)."""
        self._client.update_run(run_id, status="RUNNING")
        self._client.set_tag(run_id, ERROR_TAG, "")

    @_store_call
    def set_parent(self, run_id: str, parent_id: str) -> None:
        """Make ``run_id`` a child of ``parent_id`` unless it has a parent already (it keeps its first)."""
        if self.run(run_id).parent is None:
            self._client.set_tag(run_id, PARENT_TAG, parent_id)

    @_store_call
    def finish(self, run_id: str) -> None:
        self._client.set_terminated(run_id, status="FINISHED")

    @_store_call
    def kill(self, run_id: str) -> None:
        """Mark the run KILLED (interrupted, or superseded by ``--force``): it can be resumed."""
        self._client.set_terminated(run_id, status="KILLED")

    @_store_call
    def fail(self, run_id: str, error: str) -> None:
        """Mark the run FAILED with its error (tag ``lossbench.error`` and the run description)."""
        error = redact(error)
        try:
            self._client.set_tag(run_id, ERROR_TAG, error[:MAX_PARAM_LENGTH])
            self._client.set_tag(run_id, "mlflow.note.content", f"FAILED: {error}"[:MAX_PARAM_LENGTH])
        finally:
            self._client.set_terminated(run_id, status="FAILED")

    # -- logging ----------------------------------------------------------------------------
    @_store_call
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        existing = self._client.get_run(run_id).data.params
        # only what the run lacks: a logged param is never changed (MLflow refuses that), and a run
        # whose params were cut short by a kill gets the rest
        items = [Param(k, redact(v)) for k, v in sorted(flat.items()) if k not in existing]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self._client.log_batch(run_id, params=items[start:start + PARAMS_PER_BATCH])

    @_store_call
    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), METRICS_PER_BATCH):
            self._client.log_batch(run_id, metrics=items[start:start + METRICS_PER_BATCH])

    @_store_call
    def logged_steps(self, run_id: str, keys: Iterable[str]) -> dict[str, set[int]]:
        """The steps at which each metric of ``keys`` has been logged in the run."""
        return {key: {m.step for m in self._client.get_metric_history(run_id, key)} for key in keys}

    @_store_call
    def log_metrics_once(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log only the metrics the run does not have yet (metrics logged once per run, e.g. the
        summary: a re-run after a kill that came after the logging adds no second value)."""
        have = self._client.get_run(run_id).data.metrics
        self.log_metrics(run_id, {k: v for k, v in metrics.items() if k not in have}, step=step)

    @_store_call
    def log_artifacts(self, run_id: str, files: Iterable[Path | str], artifact_path: str | None = None) -> None:
        for path in files:
            self._client.log_artifact(run_id, str(path), artifact_path)

    @_store_call
    def set_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set (or overwrite) tags of a run; values are redacted and cut to MLflow's limit."""
        from mlflow.entities import RunTag

        items = [RunTag(k, redact(str(v))[:MAX_PARAM_LENGTH]) for k, v in tags.items()]
        if items:
            self._client.log_batch(run_id, tags=items)

    @_store_call
    def log_dataset(self, run_id: str, *, name: str, digest: str, source: str, context: str = "training",
                    profile: Mapping[str, Any] | None = None) -> None:
        """Record the run's dataset (MLflow's Dataset column and the run's inputs): ``digest`` is the
        split's hash, so runs on the same split show the same dataset. Logged once per run."""
        import json

        from mlflow.entities import Dataset, DatasetInput, InputTag

        existing = self._client.get_run(run_id).inputs
        if existing and any(d.dataset.name == name and d.dataset.digest == digest[:36]
                            for d in existing.dataset_inputs):
            return
        dataset = Dataset(name=name, digest=digest[:36], source_type="local", source=json.dumps({"uri": source}),
                          profile=json.dumps(dict(profile or {}), default=str))
        inputs = [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])]
        try:
            self._client.log_inputs(run_id, datasets=inputs)
        except Exception as exc:  # noqa: BLE001 - only the race below is retried
            # MLflow's database store looks the dataset up, then inserts it: two cells of a parallel
            # matrix on one split can both miss it, and the second insert breaks the unique key
            # (seen on PostgreSQL). The retry finds the row the other cell wrote.
            if not re.search(r"unique|duplicate key|already exists", str(exc), re.IGNORECASE):
                raise
            self._client.log_inputs(run_id, datasets=inputs)

    @_store_call
    def log_pytorch_model(self, run_id: str, model: Any, *, name: str = "model", metadata: Mapping[str, Any],
                          extra_files: Iterable[Path | str] = (), pip_requirements: Iterable[str] = ()) -> str:
        """Log ``model`` as an MLflow PyTorch model of the run (``mlflow.pytorch.log_model``: the UI's
        Models column, ``mlflow models`` tooling); returns its ``models:/`` URI."""
        import mlflow
        import mlflow.pytorch

        # mlflow.set_tracking_uri (and set_experiment) also write MLFLOW_TRACKING_URI (and the
        # experiment's id) into os.environ: put them back after, or every later command of this process
        # and every subprocess it starts would take this store for the user's choice
        saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID")}
        try:
            mlflow.set_tracking_uri(self.uri)
            mlflow.set_experiment(experiment_id=self.experiment_id)  # the logged model's experiment
            # pickle: a MONAI network needs no input example (pt2 export does); lossbench itself reads the
            # weights from best_model.pt with torch.load(weights_only=True) (_quiet_mlflow mutes the warning)
            info = mlflow.pytorch.log_model(model, name=name, run_id=run_id, metadata=dict(metadata),
                                            serialization_format="pickle",
                                            extra_files=[str(p) for p in extra_files] or None,
                                            pip_requirements=list(pip_requirements) or None)
            return info.model_uri
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

    # -- artifacts --------------------------------------------------------------------------
    @_store_call
    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of the artifacts directly under ``path`` of a run (empty if there are none)."""
        try:
            return [item.path for item in self._client.list_artifacts(run_id, path)]
        except Exception as exc:  # noqa: BLE001 - unreadable artifact store: one line
            raise TrackingError(f"cannot list the artifacts of run {run_id}: {type(exc).__name__}: {exc}") from None

    def has_artifact(self, run_id: str, artifact: str) -> bool:
        folder = artifact.rsplit("/", 1)[0] if "/" in artifact else None
        return artifact in self.list_artifacts(run_id, folder)

    @_store_call
    def download(self, run_id: str, artifact: str, dst: Path | str) -> Path:
        return Path(self._client.download_artifacts(run_id, artifact, str(dst)))

    def _read(self, run_id: str, artifact: str, read: Any) -> Any:
        """``read(path)`` of one downloaded artifact (a one-line error if it cannot be read)."""
        with tempfile.TemporaryDirectory(prefix="lossbench-artifact-") as tmp:
            try:
                return read(self.download(run_id, artifact, tmp))
            except Exception as exc:  # noqa: BLE001 - a missing or torn artifact: one line naming it
                raise TrackingError(f"cannot read {artifact} of run {run_id}: {type(exc).__name__}: {exc}") from None

    def read_text(self, run_id: str, artifact: str) -> str:
        """The text of one artifact of a run."""
        return self._read(run_id, artifact, Path.read_text)

    def read_bytes(self, run_id: str, artifact: str) -> bytes:
        """The bytes of one artifact of a run."""
        return self._read(run_id, artifact, Path.read_bytes)

    def read_table(self, run_id: str, artifact: str, **read_csv: Any) -> pd.DataFrame:
        """A CSV artifact of a run as a DataFrame (``read_csv`` options passed to pandas)."""
        import pandas as pd

        return self._read(run_id, artifact, lambda path: pd.read_csv(path, **read_csv))

    @property
    def shown_uri(self) -> str:
        """The store's URI as it may be shown or stored (password masked)."""
        return redact(self.uri)

    def run_url(self, run_id: str) -> str:
        if self.uri.startswith(("http://", "https://")):
            clean = split_credentials(self.uri)[0]  # a link to paste in a browser: no credentials in it
            return f"{clean.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return f"lossbench ui  →  experiment {self.experiment!r}, run {run_id}"


# -- the tracking server ---------------------------------------------------------------------------
def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def stop_process_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group started for ``proc`` (``start_new_session``), then SIGKILL what is left."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@dataclasses.dataclass(frozen=True)
class Server:
    """A running ``mlflow server`` started by :func:`serve`."""

    url: str
    process: subprocess.Popen
    #: The record of a server from an earlier run that was found still running and stopped.
    stale: dict[str, Any] | None = None


@contextlib.contextmanager
def serve(store: str | None, host: str = "127.0.0.1", port: int | None = None, *,
          log_file: Path | None = None, timeout: float = 120.0, serve_artifacts: bool = False,
          artifacts_destination: str | None = None, record: Path | None = None) -> Iterator[Server]:
    """An ``mlflow server`` over ``store`` (None: the embedded SQLite store; or a database URI such
    as ``postgresql+psycopg2://…``); yields it once ``/health`` answers; stopped by its process id on
    exit, and terminated by the kernel if this process dies first (:mod:`lossbench.processes`).

    Artifacts: the embedded artifact root, written by clients directly; with ``serve_artifacts``
    new experiments store theirs through the server (``mlflow-artifacts:/``) in
    ``artifacts_destination`` (default: the embedded root), so clients on other hosts need no
    shared folder. ``record``: a file naming the server's process id and port while it runs; a
    server recorded there by an earlier, killed process is stopped first (``Server.stale``).
    The store URI goes to the server through its environment, not its command line (passwords).

    One worker and no job execution: ~12 s to answer and ~0.5 GB instead of ~29 s and ~3 GB.
    Output goes to ``log_file`` (or this process's terminal when None).
    """
    from lossbench.processes import spawn, stop_recorded, write_record

    uri = resolve_tracking_uri(store)
    if uri.startswith(("http://", "https://")):
        raise TrackingError(f"{redact(uri)} is a tracking server already: open it in a browser")
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    if not os.path.exists(mlflow):
        raise TrackingError("the mlflow command is missing from this environment; reinstall lossbench")
    stale = stop_recorded(record) if record is not None else None
    port = port or free_port(host)
    url = f"http://{host}:{port}"
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_BACKEND_STORE_URI": uri}
    artifact_root = paths.default_artifact_root().as_uri()
    args = [mlflow, "server", "--host", host, "--port", str(port), "--workers", "1"]
    if serve_artifacts:
        args += ["--serve-artifacts", "--artifacts-destination", artifacts_destination or artifact_root]
    else:
        args += ["--default-artifact-root", artifact_root]
    with contextlib.ExitStack() as stack:
        out = None
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            out = stack.enter_context(open(log_file, "ab"))
        proc = spawn(args, stdout=out, stderr=subprocess.STDOUT if out else None, env=env)
    try:
        if record is not None:
            write_record(record, proc, port=port, url=url)
        deadline = time.monotonic() + timeout
        where = f" (log: {log_file})" if log_file else ""
        while True:
            if proc.poll() is not None:
                tail = (log_file.read_text(errors="replace").strip().splitlines()[-1:] if log_file else []) or [
                    "see its output above"]
                raise TrackingError(f"the mlflow server exited with code {proc.returncode}: {tail[0]}{where}")
            try:
                with urllib.request.urlopen(url + "/health", timeout=2) as response:  # noqa: S310 - our own server
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TrackingError(f"the mlflow server did not answer within {timeout:.0f} s{where}")
            time.sleep(0.5)
        yield Server(url, proc, stale)
    finally:
        stop_process_group(proc)
        if record is not None:
            with contextlib.suppress(OSError):
                record.unlink()
