"""``lossbench ui``: the MLflow UI on lossbench's tracking store, bound to localhost."""

from __future__ import annotations

import typer


def ui(
    port: int = typer.Option(5000, "--port", help="Port of the UI."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to bind; keep 127.0.0.1 unless you mean it."),
    tracking_uri: str = typer.Option(None, "--tracking-uri", envvar="MLFLOW_TRACKING_URI",
                                    help="Store to show (default: the embedded SQLite store)."),
) -> None:
    """Open the MLflow UI on the embedded store (runs, params, metric curves, artifacts)."""
    import signal

    from lossbench.errors import LossbenchError
    from lossbench.tracking import resolve_tracking_uri, serve

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)  # a SIGTERM stops the server too, by its process id
    uri = resolve_tracking_uri(tracking_uri)
    typer.echo(f"starting the MLflow UI for {uri} …")
    try:
        with serve(uri, host, port) as server:
            typer.echo(f"MLflow UI on {server.url} for {uri} (Ctrl-C to stop)")
            code = server.process.wait()
    except KeyboardInterrupt:
        typer.echo("stopped the MLflow UI")
        return
    raise LossbenchError(f"the MLflow server stopped by itself (exit code {code})")
