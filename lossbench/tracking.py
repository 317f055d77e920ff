"""The MLflow adapter: the only module of lossbench that imports MLflow.

Default store: SQLite at ``$LOSSBENCH_HOME/mlflow.db`` with artifacts in
``$LOSSBENCH_HOME/mlartifacts`` (MLflow 3 no longer accepts the old ``./mlruns`` file store).
``--tracking-uri http://host:port`` uses a tracking server instead; it is checked before
anything runs, so an unreachable server is one clear error, not a hang mid-training.

Metrics and params are written with ``log_batch`` (one call per epoch, not one per metric:
a single-metric call costs ~9 ms on SQLite and 20–60 ms against a server).
"""

from __future__ import annotations

import logging
import os
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lossbench import paths
from lossbench.errors import LossbenchError

CELL_TAG = "lossbench.cell"
KIND_TAG = "lossbench.kind"
ERROR_TAG = "lossbench.error"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000  # MLflow 3's limit on a param value
PARAMS_PER_BATCH = 100
METRICS_PER_BATCH = 1000


class TrackingError(LossbenchError):
    """The tracking store cannot be used (unreachable server, unreadable store)."""


def _quiet_mlflow() -> None:
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(logging.WARNING)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # we print where to look ourselves


def resolve_tracking_uri(uri: str | None) -> str:
    """``None`` means the embedded SQLite store under ``$LOSSBENCH_HOME``."""
    if not uri:
        paths.home().mkdir(parents=True, exist_ok=True)
        return paths.default_tracking_uri()
    return uri


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """For http(s) URIs, ask the server's ``/health`` endpoint; raise a one-line error if it is down."""
    if not uri.startswith(("http://", "https://")):
        return
    url = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - user-given URI
            if response.status != 200:
                raise TrackingError(f"tracking server {uri} answered {response.status} on /health")
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TrackingError(
            f"tracking server {uri} is unreachable ({reason}); start it (e.g. `mlflow server --host 127.0.0.1 "
            f"--port 5000`) or leave out --tracking-uri to use the embedded store in {paths.home()}"
        ) from None


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


class Tracker:
    """One experiment in one tracking store."""

    def __init__(
        self, tracking_uri: str | None = None, experiment: str = "lossbench", *, create: bool = True
    ) -> None:
        """Open ``experiment`` in the store, creating it unless ``create`` is false (readers)."""
        _quiet_mlflow()
        self.uri = resolve_tracking_uri(tracking_uri)
        check_reachable(self.uri)
        from mlflow.tracking import MlflowClient

        _quiet_mlflow()  # mlflow sets its own logger levels when imported
        try:
            self.client = MlflowClient(tracking_uri=self.uri)
            found = self.client.get_experiment_by_name(experiment)
            if found is None and not create:
                raise TrackingError(f"no experiment {experiment!r} in {self.uri}")
            if found is None:
                location = None
                if self.uri.startswith("sqlite:"):
                    location = (paths.default_artifact_root() / experiment).as_uri()
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                if found.lifecycle_stage == "deleted":
                    raise TrackingError(
                        f"experiment {experiment!r} is deleted in {self.uri}; restore it in the MLflow UI "
                        "or choose another --experiment"
                    )
                self.experiment_id = found.experiment_id
        except LossbenchError:
            raise
        except Exception as exc:  # noqa: BLE001 - any store failure is one line for the user
            raise TrackingError(f"cannot use tracking store {self.uri}: {type(exc).__name__}: {exc}") from None
        self.experiment = experiment

    # -- runs -------------------------------------------------------------------------------
    def find_cell_runs(self, cell: str) -> list[Any]:
        """Runs of this experiment for a cell identity, newest first."""
        return list(self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{CELL_TAG}` = '{cell}'",
            order_by=["attributes.start_time DESC"], max_results=100,
        ))

    def start_run(self, name: str, tags: Mapping[str, str], parent_run_id: str | None = None) -> str:
        all_tags = dict(tags)
        if parent_run_id:
            all_tags[PARENT_TAG] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        return run.info.run_id

    def reopen(self, run_id: str) -> None:
        """Mark an interrupted or failed run as running again (resume)."""
        self.client.update_run(run_id, status="RUNNING")
        self.client.set_tag(run_id, ERROR_TAG, "")

    def finish(self, run_id: str) -> None:
        self.client.set_terminated(run_id, status="FINISHED")

    def fail(self, run_id: str, error: str) -> None:
        """Mark the run FAILED with its error (tag ``lossbench.error`` and the run description)."""
        try:
            self.client.set_tag(run_id, ERROR_TAG, error[:MAX_PARAM_LENGTH])
            self.client.set_tag(run_id, "mlflow.note.content", f"FAILED: {error}"[:MAX_PARAM_LENGTH])
        finally:
            self.client.set_terminated(run_id, status="FAILED")

    # -- logging ----------------------------------------------------------------------------
    def log_params(self, run_id: str, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten_params(params)
        existing = self.client.get_run(run_id).data.params
        items = [Param(k, v) for k, v in sorted(flat.items()) if existing.get(k) != v]
        for start in range(0, len(items), PARAMS_PER_BATCH):
            self.client.log_batch(run_id, params=items[start:start + PARAMS_PER_BATCH])

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items() if v is not None]
        for start in range(0, len(items), METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=items[start:start + METRICS_PER_BATCH])

    def log_artifacts(self, run_id: str, files: Iterable[Path | str], artifact_path: str | None = None) -> None:
        for path in files:
            self.client.log_artifact(run_id, str(path), artifact_path)

    def download(self, run_id: str, artifact: str, dst: Path | str) -> Path:
        return Path(self.client.download_artifacts(run_id, artifact, str(dst)))

    # -- reading ----------------------------------------------------------------------------
    def search_runs(self, filter_string: str = "", order_by: Iterable[str] | None = None) -> list[Any]:
        """Every active run of the experiment that matches ``filter_string``, all pages, newest first."""
        runs: list[Any] = []
        token = None
        try:
            while True:
                page = self.client.search_runs(
                    [self.experiment_id], filter_string=filter_string,
                    order_by=list(order_by or ["attributes.start_time DESC"]), max_results=1000, page_token=token,
                )
                runs.extend(page)
                token = page.token
                if not token:
                    return runs
        except Exception as exc:  # noqa: BLE001 - a bad filter or a broken store: one line
            raise TrackingError(f"cannot search runs in {self.uri}: {type(exc).__name__}: {exc}") from None

    def get_run(self, run_id: str) -> Any:
        """The run ``run_id`` (any experiment of the store); a one-line error if there is none."""
        try:
            return self.client.get_run(run_id)
        except Exception:  # noqa: BLE001 - MlflowException RESOURCE_DOES_NOT_EXIST and friends
            raise TrackingError(f"run {run_id!r} does not exist in {self.uri}") from None

    def list_artifacts(self, run_id: str, path: str | None = None) -> list[str]:
        """Paths of the artifacts directly under ``path`` of a run (empty if there are none)."""
        try:
            return [item.path for item in self.client.list_artifacts(run_id, path)]
        except Exception as exc:  # noqa: BLE001 - unreadable artifact store: one line
            raise TrackingError(f"cannot list the artifacts of run {run_id}: {type(exc).__name__}: {exc}") from None

    def run_url(self, run_id: str) -> str:
        if self.uri.startswith(("http://", "https://")):
            return f"{self.uri.rstrip('/')}/#/experiments/{self.experiment_id}/runs/{run_id}"
        return f"lossbench ui  →  experiment {self.experiment!r}, run {run_id}"
