"""Ctrl-C and SIGTERM are held off while lossbench writes to its tracking store.

An interrupt raised inside an MLflow call used to leave SQLite's connection in its transaction:
marking the run KILLED then failed with "database is locked" (CI: a SIGTERM'd ``lossbench run``
exited 1, not 130) or waited on the lock for good.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from lossbench.processes import deferred_interrupts


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


@pytest.fixture
def sigterm_interrupts():
    old = signal.signal(signal.SIGTERM, _raise_interrupt)
    yield
    signal.signal(signal.SIGTERM, old)


def test_a_signal_inside_the_block_is_delivered_when_it_ends(sigterm_interrupts):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            done.append("after the signal")
    assert done == ["after the signal"]
    assert signal.getsignal(signal.SIGTERM) is _raise_interrupt


def test_ctrl_c_is_deferred_too_and_nested_blocks_deliver_once():
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            with deferred_interrupts():
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("inner")
            steps.append("outer")
    assert steps == ["inner", "outer"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_without_a_signal_nothing_happens_and_it_decorates(sigterm_interrupts):
    @deferred_interrupts()
    def add(a, b):
        return a + b

    assert add(2, 3) == 5 and add(1, 1) == 2
    assert signal.getsignal(signal.SIGTERM) is _raise_interrupt


def test_other_threads_pass_through(sigterm_interrupts):
    seen = []

    def work():
        with deferred_interrupts():
            seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    assert seen == [_raise_interrupt]  # handlers are the main thread's: untouched


def test_sigterm_during_store_writes_never_keeps_the_run_from_being_killed(tmp_path):
    """SIGTERMs at random moments of a loop of metric writes: every one ends as a KeyboardInterrupt
    after which the run is marked KILLED, and the store stays usable (a subprocess, so a store left
    locked fails the test instead of hanging it)."""
    script = textwrap.dedent(f"""
        import os, random, signal, threading, time
        from lossbench.tracking import Tracker

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, interrupt)
        tracker = Tracker("sqlite:///{tmp_path / 'mlflow.db'}", "interrupts")
        rng = random.Random(0)
        interrupted = 0
        for i in range(40):
            run_id = tracker.start_run(f"r{{i}}", {{}})
            timer = threading.Timer(rng.uniform(0.0, 0.03), os.kill, (os.getpid(), signal.SIGTERM))
            try:
                timer.start()
                for step in range(100):
                    tracker.log_metrics(run_id, {{"a": 1.0, "b": 2.0, "c": float(step)}}, step=step)
                timer.join()
                time.sleep(0.01)
            except KeyboardInterrupt:
                interrupted += 1
                timer.join()
                tracker.kill(run_id)
                assert tracker.run(run_id).status == "KILLED", i
        print("interrupted", interrupted)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "interrupted 40" in result.stdout


def test_database_stores_defer_and_tracking_servers_do_not(sigterm_interrupts):
    """A tracking server's client may retry for minutes: Ctrl-C must still stop it at once."""
    from lossbench.tracking import Tracker

    tracker = object.__new__(Tracker)  # no store needed to choose
    tracker.uri = "http://127.0.0.1:5000"
    with pytest.raises(KeyboardInterrupt), tracker._uninterrupted():
        os.kill(os.getpid(), signal.SIGTERM)
        pytest.fail("the interrupt should have stopped the block at once")
    for uri in ("sqlite:////tmp/x/mlflow.db", "postgresql+psycopg2://u@127.0.0.1/db"):
        tracker.uri = uri
        reached = []
        with pytest.raises(KeyboardInterrupt), tracker._uninterrupted():
            os.kill(os.getpid(), signal.SIGTERM)
            reached.append(uri)
        assert reached == [uri]
