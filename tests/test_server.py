"""``lossbench server`` on PostgreSQL: a temporary cluster (Debian's postgresql package, initdb in
a temporary folder, 127.0.0.1 only, run as the postgres user), a served-artifacts tracking server
on it, and a tiny parallel matrix through it: every run FINISHED, no metric lost."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import lossbench_executable, wait_until
from tests.test_executors import SHORT, cohort, finish, start_matrix  # noqa: F401
from tests.test_run import run_env

REQUIRED = os.environ.get("LOSSBENCH_REQUIRE_SERVICES") == "1"  # .ci/run: fail, do not skip


def _postgres_bin() -> Path | None:
    found = shutil.which("initdb") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))[::-1]), None)
    return Path(found).parent if found else None


@pytest.fixture
def postgres():
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields its SQLAlchemy URI."""
    bindir = _postgres_bin()
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        bindir = None
    if bindir is None:
        if REQUIRED:
            pytest.fail("PostgreSQL (initdb) or psycopg2 is missing: .ci/run installs them")
        pytest.skip("PostgreSQL (initdb) and psycopg2 are needed")
    from lossbench.tracking import free_port

    folder = Path(tempfile.mkdtemp(prefix="lossbench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        shutil.chown(folder, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = folder / "data", free_port()
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "lossbench", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True, timeout=120)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {folder}"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(folder / "log"),
                    "-w", "start"], check=True, capture_output=True, timeout=120)
    try:
        yield f"postgresql+psycopg2://lossbench@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120)  # stops the server by its postmaster.pid
        shutil.rmtree(folder, ignore_errors=True)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.mark.slow
def test_a_matrix_through_lossbench_server_on_postgresql(postgres, cohort, tmp_path):  # noqa: F811
    from mlflow.tracking import MlflowClient

    from lossbench.tracking import free_port

    home = tmp_path / "home"
    home.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([lossbench_executable(), "server", "--store", postgres, "--port", str(port),
                               "--serve-artifacts"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=run_env(home), cwd=tmp_path)
    try:
        wait_until(lambda: _healthy(url), what="lossbench server to answer", process=server, timeout=180)
        code, out, err = finish(start_matrix(home, "--loss", "dl,l1dfl", "--data", str(cohort), *SHORT,
                                             "--jobs", "2", "--tracking-uri", url))
        assert code == 0, out[-3000:] + err[-3000:]
        assert "local MLflow server" not in out  # the given server is used as it is

        client = MlflowClient(url)
        experiment = client.get_experiment_by_name("lossbench")
        assert experiment.artifact_location.startswith("mlflow-artifacts:")  # served, no shared folder needed
        runs = client.search_runs([experiment.experiment_id])
        cells = [r for r in runs if r.data.tags.get("lossbench.kind") == "cell"]
        parent = next(r for r in runs if r.data.tags.get("lossbench.kind") == "matrix")
        assert len(cells) == 2 and all(r.info.status == "FINISHED" for r in [*cells, parent])
        for run in cells:  # no metric lost: every epoch of every per-epoch metric, the summary, the artifacts
            for key in ("train_loss", "val_dice", "epoch_seconds"):
                assert sorted(m.step for m in client.get_metric_history(run.info.run_id, key)) == [0, 1], key
            assert "test_dice_mean" in run.data.metrics
            assert client.list_artifacts(run.info.run_id)
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=120)
    assert server.returncode == 0, out[-2000:] + err[-2000:]
    assert "stopped the MLflow tracking server" in out and not _healthy(url)
    assert not list((home / "servers").glob("*.json"))  # its record removed


def test_server_refuses_a_plain_postgresql_uri(run_cli):
    result = run_cli("server", "--store", "postgresql://u@127.0.0.1:1/db")
    assert result.returncode == 1 and "postgresql+psycopg2://" in result.stderr and result.stderr.count("\n") == 1
