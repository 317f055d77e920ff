"""``lossbench server``: an MLflow tracking server for cells on many processes or hosts.

Over the embedded SQLite store (one machine) or a database such as PostgreSQL (many writers,
many hosts); with ``--serve-artifacts`` the artifacts of new experiments go through the server,
so cells on other hosts need no shared folder. Listens on 127.0.0.1 unless ``--host`` says
otherwise; Ctrl-C or SIGTERM stops it (by its process id), and it dies with this command.
"""

from __future__ import annotations

import typer


def server(
    store: str = typer.Option(None, "--store", "--backend-store-uri", help="The store: the embedded SQLite store "
                              "(default) or a database URI, e.g. postgresql+psycopg2://user@host:5432/mlflow "
                              "(the password from ~/.pgpass or PGPASSWORD rather than the URI)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on; 0.0.0.0 for cells on other hosts."),
    port: int = typer.Option(5000, "--port", help="Port to listen on."),
    serve_artifacts: bool = typer.Option(False, "--serve-artifacts/--no-serve-artifacts",
                                         help="Store the artifacts of new experiments through the server "
                                         "(mlflow-artifacts:/), in --artifacts-destination."),
    artifacts_destination: str = typer.Option(None, "--artifacts-destination",
                                              help="Where served artifacts are kept (a folder or s3://…; default: "
                                              "$LOSSBENCH_HOME/mlartifacts)."),
) -> None:
    """Run an MLflow tracking server until Ctrl-C; cells use it with --tracking-uri http://HOST:PORT."""
    import signal

    from lossbench import paths
    from lossbench.cli._common import console
    from lossbench.errors import LossbenchError
    from lossbench.tracking import redact, resolve_tracking_uri, serve

    uri = resolve_tracking_uri(store)
    if uri.startswith(("http://", "https://")):
        raise LossbenchError(f"--store {redact(uri)} is a tracking server already; give a database URI")
    if uri.startswith("postgresql://") or uri.startswith("postgres://"):
        raise LossbenchError("--store: write postgresql+psycopg2://… (plain postgresql:// makes SQLAlchemy look "
                             "for psycopg 3, which lossbench does not install)")
    if uri.startswith("postgresql+psycopg2://"):
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            raise LossbenchError("a PostgreSQL store needs psycopg2: pip install 'lossbench[postgres]'") from None
    if artifacts_destination and not serve_artifacts:
        raise LossbenchError("--artifacts-destination applies with --serve-artifacts")
    if artifacts_destination and "://" not in artifacts_destination:
        from pathlib import Path

        artifacts_destination = Path(artifacts_destination).expanduser().resolve().as_uri()

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    out = console()
    work = paths.ensure_home() / "servers"
    log = work / f"{host}-{port}.log"
    shown = redact(uri)
    out.print(f"starting an MLflow tracking server on {host}:{port} for {shown} …", highlight=False)
    try:
        with serve(uri, host, port, log_file=log, serve_artifacts=serve_artifacts,
                   artifacts_destination=artifacts_destination, record=work / f"{host}-{port}.json") as srv:
            if srv.stale:
                out.print(f"stopped a stale server (pid {srv.stale['pid']}) recorded for {host}:{port}",
                          highlight=False)
            artifacts = (f"served from {redact(artifacts_destination or paths.default_artifact_root().as_uri())}"
                         if serve_artifacts else f"in {paths.default_artifact_root()} (written by the clients)")
            out.print(f"MLflow tracking server on {srv.url} (pid {srv.process.pid}) for {shown}; artifacts {artifacts}; "
                      f"log {log}", highlight=False, soft_wrap=True)
            out.print(f"use it with: lossbench matrix … --tracking-uri {srv.url}   (Ctrl-C stops it)", highlight=False,
                      soft_wrap=True)
            code = srv.process.wait()
    except KeyboardInterrupt:
        out.print("stopped the MLflow tracking server", highlight=False)
        return
    raise LossbenchError(f"the MLflow server stopped by itself (exit code {code}); see {log}")
