"""The MLflow UI in a real headless browser: Debian's chromium and chromium-driver, driven by selenium.

A store with four logged cell runs (2 losses × 2 seeds: params, per-epoch curves, test summaries,
``evaluation/cases.csv``, logged as the engine logs them but without training) and one comparison
(``lossbench.compare``, which writes ``report.html``); ``lossbench ui`` serves it on 127.0.0.1. The
experiment page must list the cells, a run page its params, metric charts and evaluation artifacts,
and the comparison report must render from file://. Nothing is downloaded: the browser is the
system's, and it may resolve no name but 127.0.0.1.

Without chromium, chromedriver or selenium the tests are skipped, or fail when
``LOSSBENCH_REQUIRE_SERVICES=1`` (as ``.ci/run`` sets).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import lossbench_executable, wait_until
from tests.test_ui import free_port

REQUIRED = os.environ.get("LOSSBENCH_REQUIRE_SERVICES") == "1"  # .ci/run: fail, do not skip
EXPERIMENT = "ui-browser"
WAIT = 90  # seconds an element may take to appear (a hang guard on 2 busy cores, not a speed check)


def _browser_or_skip() -> tuple[str, str]:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    try:
        import selenium  # noqa: F401
    except ImportError:
        selenium_ok = False
    else:
        selenium_ok = True
    if not (chromium and driver and selenium_ok):
        missing = ", ".join(name for name, ok in (("chromium", chromium), ("chromedriver", driver),
                                                    ("selenium", selenium_ok)) if not ok)
        message = f"{missing} missing (apt-get install chromium chromium-driver; pip install -e '.[browser]')"
        if REQUIRED:
            pytest.fail(message + ": .ci/run installs them")
        pytest.skip(message)
    return chromium, driver


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The store, the UI serving it and a headless browser; stopped (by pid) at the end."""
    chromium, driver_path = _browser_or_skip()
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    import lossbench
    from lossbench.tracking import Tracker
    from tests.compare._synth import cases_table, ground_truth, log_runs

    root = tmp_path_factory.mktemp("ui-browser")
    home = root / "home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LOSSBENCH_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        gt = ground_truth(8, seed=1)
        specs = [{"loss": loss, "network": "attunet", "fold": 0, "seed": seed,
                  "table": cases_table(gt, dice_shift=shift, seed=seed + 3),
                  "params": {"config": {"loss": loss, "network": "attunet", "epochs": 3}}}
                 for loss, shift in (("dl", 0.0), ("l1dfl", 0.1)) for seed in (0, 1)]
        ids = log_runs(home, EXPERIMENT, specs, tmp=root / "artifacts")
        tracker = Tracker(None, EXPERIMENT)
        for run_id in ids:
            for step in range(3):
                tracker.log_metrics(run_id, {"train_loss": 1.0 - 0.2 * step, "val_dice": 0.3 + 0.1 * step}, step=step)
            tracker.log_metrics(run_id, {"test_dice_mean": 0.6, "test_f1_pooled": 0.5})
        report = lossbench.compare(experiment=EXPERIMENT, metrics=["dice"], min_pairs=2, n_boot=0,
                                   out=root / "report")
        experiment_id = tracker.experiment_id
        view_path = tracker.view_path()

    port = free_port()
    server = subprocess.Popen([lossbench_executable(), "ui", "--port", str(port)],
                              env={**os.environ, "LOSSBENCH_HOME": str(home)}, cwd=root,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    browser = None
    try:
        def healthy() -> bool:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    return response.status == 200
            except OSError:
                return False

        wait_until(healthy, process=server, what="the MLflow UI to answer", poll=0.5, timeout=120)
        options = Options()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1600,1200", "--no-first-run", "--disable-extensions",
                    "--disable-background-networking", "--disable-component-update",
                    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"):  # no network but ours
            options.add_argument(arg)
        os.environ.setdefault("SE_OFFLINE", "true")  # selenium manager: never download a driver
        browser = webdriver.Chrome(service=Service(driver_path), options=options)
        browser.set_page_load_timeout(WAIT)
        yield {"browser": browser, "base": f"http://127.0.0.1:{port}", "experiment_id": experiment_id,
               "view_path": view_path,
               "runs": ids, "names": [f"{s['loss']}-attunet-fold0-seed{s['seed']}" for s in specs],
               "report": report}
    finally:
        if browser is not None:
            browser.quit()
        os.killpg(server.pid, signal.SIGTERM)  # the UI and the MLflow server it started, by our pid
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)


def _page_text(browser) -> str:
    return browser.find_element("tag name", "body").text


def _wait_for_text(browser, *texts: str) -> str:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, WAIT).until(lambda b: all(t in _page_text(b) for t in texts),
                                       message=f"page never showed {texts}")
    return _page_text(browser)


def _experiment(site) -> str:
    return f"{site['base']}/#/experiments/{site['experiment_id']}"


def test_experiment_page_lists_the_cells_and_the_comparison(site):
    browser = site["browser"]
    browser.get(_experiment(site) + "?workflowType=machine_learning")
    text = _wait_for_text(browser, *site["names"])
    assert "Model training" in text and EXPERIMENT in text
    assert "compare-4-runs" in text  # the comparison run sits beside its cells
    assert "5 matching runs" in text


def test_lossbench_view_shows_loss_network_fold_seed_and_the_test_summaries_first(site):
    """The link lossbench prints and puts in the experiment's description opens its saved view."""
    from selenium.webdriver.support.ui import WebDriverWait

    from lossbench.tracking import VIEW_KEY

    browser = site["browser"]
    browser.get(f"{site['base']}/{site['view_path']}")
    wanted = ["lossbench.loss", "lossbench.network", "lossbench.fold", "lossbench.seed", "test_dice_mean"]

    def headers(b) -> list[str]:  # the column headers, left to right (read at once: the grid re-renders)
        placed = b.execute_script(
            "return Array.from(document.querySelectorAll('.ag-header-cell')).map("
            "c => [c.getBoundingClientRect().left, c.innerText.trim()]).filter(p => p[1]);")
        return [label for _, label in sorted(placed)]

    WebDriverWait(browser, WAIT).until(lambda b: all(w in headers(b) for w in wanted),
                                       message="the lossbench view's columns never appeared")
    shown = headers(browser)
    order = [shown.index(w) for w in wanted]
    assert order == sorted(order), shown  # loss, network, fold, seed, then the test summaries
    if "Dataset" in shown:  # (columns far to the right may not be drawn at all: ag-grid virtualises them)
        assert shown.index("lossbench.seed") < shown.index("Dataset"), shown  # before MLflow's own columns
    assert VIEW_KEY in _page_text(browser)  # the saved view is named in the Views menu button


def test_run_page_shows_params_metric_charts_and_evaluation_artifacts(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    browser = site["browser"]
    run = f"{_experiment(site)}/runs/{site['runs'][0]}"
    browser.get(run)
    text = _wait_for_text(browser, site["names"][0], "Parameters", "config.loss", "test_dice_mean")
    assert "config.network" in text and "attunet" in text and "Finished" in text

    browser.get(run + "/model-metrics")
    _wait_for_text(browser, "train_loss", "val_dice", "Step")
    WebDriverWait(browser, WAIT).until(lambda b: len(b.find_elements(By.CSS_SELECTOR, ".js-plotly-plot")) >= 2,
                                       message="no metric charts were drawn")

    browser.get(run + "/artifacts")
    _wait_for_text(browser, "evaluation")
    folder = WebDriverWait(browser, WAIT).until(
        ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='evaluation']")))
    folder.click()
    table = WebDriverWait(browser, WAIT).until(
        ec.element_to_be_clickable((By.XPATH, "//*[normalize-space(text())='cases.csv']")))
    table.click()
    text = _wait_for_text(browser, "case_id", "dice")  # the per-case table previewed
    assert "psma_000" in text


def test_comparison_report_renders(site):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser = site["browser"]
    report = site["report"].out.resolve() / "report.html"
    browser.get(report.as_uri())
    WebDriverWait(browser, WAIT).until(lambda b: b.execute_script("return document.readyState") == "complete")
    text = _page_text(browser)
    assert "dl" in text and "l1dfl" in text and site["report"].run_id in text
    assert browser.find_elements(By.TAG_NAME, "table"), "the report has no table"
    images = browser.find_elements(By.TAG_NAME, "img")
    assert images, "the report has no figure"
    broken = [img.get_attribute("alt") or img.get_attribute("src")[:40] for img in images
              if not browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", img)]
    assert not broken, f"figures that did not render: {broken}"
