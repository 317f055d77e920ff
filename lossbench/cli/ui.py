"""``lossbench ui``: the MLflow UI on lossbench's tracking store, bound to localhost."""

from __future__ import annotations

import os
import shutil
import sys

import typer


def ui(
    port: int = typer.Option(5000, "--port", help="Port of the UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; keep 127.0.0.1 unless you mean it."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", help="Store to show (default: the embedded SQLite store)."),
) -> None:
    """Open the MLflow UI on the embedded store (runs, params, metric curves, artifacts)."""
    from lossbench import paths
    from lossbench.errors import LossbenchError
    from lossbench.tracking import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        raise LossbenchError(f"{uri} is a tracking server already: open it in a browser")
    mlflow = shutil.which("mlflow") or os.path.join(os.path.dirname(sys.executable), "mlflow")
    if not os.path.exists(mlflow):
        raise LossbenchError("the mlflow command is not installed in this environment; pip install -e .")
    args = [mlflow, "server", "--backend-store-uri", uri, "--default-artifact-root",
            paths.default_artifact_root().as_uri(), "--host", host, "--port", str(port), "--workers", "1"]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    typer.echo(f"MLflow UI on http://{host}:{port} for {uri} (Ctrl-C to stop)")
    os.execve(mlflow, args, env)
