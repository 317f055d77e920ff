"""The ray executor end to end: a private Ray instance with two logical GPU slots, started by the
matrix inside a loopback-only network namespace (Ray binds non-loopback addresses even when told
127.0.0.1; in the namespace there are none). A cell killed once is retried by Ray and resumes the
same MLflow run; a SIGTERM to the matrix cancels the cells, whose runs end KILLED."""

from __future__ import annotations

import os
import re
import shutil
import signal

import pytest

from lossbench.executors import HEADER_PREFIX, PROCESS_PREFIX
from tests.test_executors import (LONG, cell_logs, cell_runs, cohort, epochs_logged, finish, last_pid,  # noqa: F401
                                  log_text, start_matrix, wait_for_checkpoint)
from tests.conftest import wait_until

pytest.importorskip("ray")

REQUIRED = os.environ.get("LOSSBENCH_REQUIRE_SERVICES") == "1"  # .ci/run: fail, do not skip
_missing = [tool for tool in ("unshare", "ip") if not shutil.which(tool)]
if _missing or os.geteuid() != 0:
    why = f"a loopback-only network namespace needs root and {', '.join(_missing) or 'unshare, ip'}"
    if REQUIRED:
        raise RuntimeError(why)
    pytest.skip(why, allow_module_level=True)

#: The matrix runs as the namespace's process (``exec``): its PID is the Popen's.
LOOPBACK_ONLY = ("unshare", "--net", "sh", "-c", 'ip link set lo up && exec "$@"', "sh")
RAY = ["-E", "ray", "-X", "num_gpus=2", "-X", "num_cpus=2"]


@pytest.mark.slow
def test_ray_runs_cells_on_distinct_gpus_and_a_killed_cell_resumes(cohort, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    killed = "dl-attunet-fold0-seed1"
    proc = start_matrix(home, "--loss", "dl", "--seeds", "0,1", "--data", str(cohort), *LONG, *RAY,
                        prefix=LOOPBACK_ONLY)
    text = wait_for_checkpoint(home, killed, proc)
    os.kill(last_pid(text, PROCESS_PREFIX), signal.SIGKILL)  # a crash (as the OOM killer would)
    code, out, err = finish(proc)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "on ray (a private instance: 1 node, 2 GPUs" in " ".join(out.split())

    logs = {name: log_text(path) for name, path in cell_logs(home).items()}
    first_devices = {re.search(r"CUDA_VISIBLE_DEVICES=(\S+)", text).group(1) for text in logs.values()}
    assert first_devices == {"0", "1"}  # one logical GPU each, set by Ray
    assert logs[killed].count(HEADER_PREFIX) == 2 and "resuming MLflow run" in logs[killed]
    assert logs["dl-attunet-fold0-seed0"].count(HEADER_PREFIX) == 1
    runs = cell_runs(home)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)  # the retry resumed, not restarted
    resumed = next(r for r in runs if r.info.run_name == killed)
    assert epochs_logged(home, resumed.info.run_id) == list(range(12))  # each epoch once, none lost
    assert "2 attempts" in out


@pytest.mark.slow
def test_sigterm_to_a_ray_matrix_cancels_its_cells_as_killed(cohort, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    proc = start_matrix(home, "--loss", "dl", "--seeds", "0,1", "--data", str(cohort), *LONG, *RAY,
                        prefix=LOOPBACK_ONLY)
    for cell in ("dl-attunet-fold0-seed0", "dl-attunet-fold0-seed1"):
        wait_for_checkpoint(home, cell, proc)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, timeout=300)
    assert code == 130, out[-3000:] + err[-3000:]
    runs = cell_runs(home)
    assert len(runs) == 2 and {r.info.status for r in runs} == {"KILLED"}, [r.info.status for r in runs]
    wait_until(lambda: all(pid_gone(last_pid(log_text(p), PROCESS_PREFIX)) for p in cell_logs(home).values()),
               what="the cell processes to end", timeout=60)


def pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False
