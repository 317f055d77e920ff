"""``lossbench ui`` serves the embedded store on 127.0.0.1 and shows logged runs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request

from tests.conftest import lossbench_executable, wait_until


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_ui_shows_a_logged_run(tmp_path):
    from lossbench.tracking import Tracker

    home = tmp_path / "home"
    env = {**os.environ, "LOSSBENCH_HOME": str(home)}
    os.environ["LOSSBENCH_HOME"] = str(home)
    try:
        tracker = Tracker(None, "ui-check")
        run_id = tracker.start_run("l1dfl-attunet-fold0-seed0", {"lossbench.kind": "cell"})
        tracker.log_params(run_id, {"config": {"loss": "l1dfl"}})
        tracker.log_metrics(run_id, {"val_dice": 0.5}, step=1)
        tracker.finish(run_id)
    finally:
        del os.environ["LOSSBENCH_HOME"]

    port = free_port()
    proc = subprocess.Popen([lossbench_executable(), "ui", "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def answer():
            url = f"http://127.0.0.1:{port}/api/2.0/mlflow/runs/get?run_id={run_id}"
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    return json.loads(response.read())["run"]
            except OSError:
                return None

        run = wait_until(answer, process=proc, what="the UI to answer", poll=0.5)
        assert run["info"]["run_name"] == "l1dfl-attunet-fold0-seed0"
        assert {"key": "config.loss", "value": "l1dfl"} in run["data"]["params"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
            assert response.status == 200 and b"<html" in response.read().lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
