"""MLflow as its users expect, and ``lossbench predict``: three tiny cells trained once for the module.

The cells go to a store and experiment named only by ``MLFLOW_TRACKING_URI`` and
``MLFLOW_EXPERIMENT_NAME`` (MLflow's own variables), then: standard tags, the dataset input, the
logged PyTorch model, the 1-based best epoch, the per-case column order, the experiment kind, the
comparison's links both ways, and ``predict`` (one run, the fold ensemble, evaluation, errors).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import lossbench_executable

TINY = ["--epochs", "1", "--val-every", "1", "--patch", "16", "--spacing", "8", "--batch", "2",
        "-S", "sw_batch_size=32", "-N", "channels=4,8,16", "-N", "strides=2,2", "-D", "n_folds=2"]
EXPERIMENT = "psma-env"


def _env(home: Path, store: str) -> dict[str, str]:
    env = {**os.environ, "LOSSBENCH_HOME": str(home), "COLUMNS": "200", "MLFLOW_TRACKING_URI": store,
           "MLFLOW_EXPERIMENT_NAME": EXPERIMENT}
    env.pop("LOSSBENCH_DEBUG", None)
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from lossbench_psma.synth import config_for, generate_cohort

    root = tmp_path_factory.mktemp("conventions")
    cohort = generate_cohort(root / "cohort", 8, seed=3, config=config_for(spacing=8.0), test_fraction=0.25)
    home, store = root / "home", f"sqlite:///{root / 'elsewhere.db'}"
    env = _env(home, store)
    for loss, fold in (("l1dfl", "0"), ("l1dfl", "1"), ("dl", "0")):
        done = subprocess.run([lossbench_executable(), "run", "--data", str(cohort), "--loss", loss, "--net", "attunet",
                               "--fold", fold, *TINY], capture_output=True, text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return {"root": root, "cohort": cohort, "home": home, "store": store, "env": env}


def _client(trained):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(trained["store"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    return client, exp, {r.info.run_name: r for r in client.search_runs([exp.experiment_id])}


def test_mlflow_variables_standard_tags_dataset_and_model(trained):
    assert not (trained["home"] / "mlflow.db").exists()  # the variables were honoured: nothing embedded
    client, exp, runs = _client(trained)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # not the GenAI view
    from lossbench.tracking import saved_view_state

    view = saved_view_state(exp.tags["mlflow.sharedViewState.lossbench"])  # a saved view, as MLflow's UI writes it
    assert view["selectedColumns"][:4] == [f"tags.`lossbench.{k}`" for k in ("loss", "network", "fold", "seed")]
    assert view["columnOrder"] == view["selectedColumns"] and "metrics.`test_dice_mean`" in view["selectedColumns"]
    run = runs["l1dfl-attunet-fold0-seed0"]
    tags = run.data.tags
    assert tags["mlflow.source.name"] == "lossbench run" and "l1dfl" in tags["mlflow.note.content"]
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1]).stdout.strip()
    if commit:
        assert tags["mlflow.source.git.commit"] == commit
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.dataset.name == "psma" and run.data.params["split.sha256"].startswith(dataset.dataset.digest)
    assert "lossbench.model_error" not in tags and tags["lossbench.model_uri"].startswith("models:/")

    import mlflow.pytorch
    import torch

    mlflow.set_tracking_uri(trained["store"])
    model = mlflow.pytorch.load_model(tags["lossbench.model_uri"])
    assert isinstance(model, torch.nn.Module)
    best = Path(client.download_artifacts(run.info.run_id, "best_model.pt", str(trained["root"])))
    weights = torch.load(best, weights_only=True)  # the weights stay loadable without unpickling code
    assert weights["epoch"] == run.data.metrics["best_epoch"] == 1  # 1-based, as the CLI prints
    assert weights["spacing"] == [8.0, 8.0, 8.0] and weights["patch"] == [16, 16, 16]
    cases = pd.read_csv(client.download_artifacts(run.info.run_id, "evaluation/cases.csv", str(trained["root"])))
    assert list(cases.columns[:6]) == ["case_id", "dice", "f1", "tp", "fp", "fn"]


def test_comparison_and_cells_link_both_ways(trained, tmp_path):
    done = subprocess.run([lossbench_executable(), "compare", "--bootstrap", "0", "--out", str(tmp_path / "report")],
                          capture_output=True, text=True, env=trained["env"], timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    client, exp, runs = _client(trained)
    (comparison,) = [r for r in runs.values() if r.data.tags.get("lossbench.kind") == "comparison"]
    cells = [r for r in runs.values() if r.data.tags.get("lossbench.kind") == "cell"]
    note = comparison.data.tags["mlflow.note.content"]
    for cell in cells:
        assert f"#/experiments/{exp.experiment_id}/runs/{cell.info.run_id}" in note
        assert cell.data.tags["lossbench.comparison"] == comparison.info.run_id


def _predict(trained, *args):
    return subprocess.run([lossbench_executable(), "predict", *args], capture_output=True, text=True,
                          env=trained["env"], timeout=600)


def test_predict_one_run_matches_its_test_predictions_and_evaluates(trained, tmp_path):
    import nibabel as nib
    import numpy as np

    client, _, runs = _client(trained)
    run = runs["l1dfl-attunet-fold0-seed0"]
    cohort = trained["cohort"]
    done = _predict(trained, "--run", run.info.run_id, "-i", str(cohort / "imagesTs"), "-o", str(tmp_path / "out"),
                    "--labels", str(cohort / "labelsTs"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["runs"] == [run.info.run_id] and len(result["cases"]) == 2
    for case in result["cases"]:
        mine = nib.load(tmp_path / "out" / f"{case}.nii.gz")
        pet = nib.load(cohort / "imagesTs" / f"{case}_0001.nii.gz")
        assert mine.shape == pet.shape and np.allclose(mine.affine, pet.affine)
        logged = nib.load(client.download_artifacts(run.info.run_id, f"predictions/{case}.nii.gz", str(tmp_path)))
        assert np.array_equal(np.asarray(mine.dataobj), np.asarray(logged.dataobj))  # the run's own test masks
    assert result["evaluation"]["dice_mean"] == pytest.approx(run.data.metrics["test_dice_mean"])


def test_predict_fold_ensemble_and_errors(trained, tmp_path):
    cohort = trained["cohort"]
    done = _predict(trained, "--loss", "l1dfl", "--net", "attunet", "--fold", "all", "--ensemble", "mean",
                    "--probabilities", "-i", str(cohort / "imagesTs"), "-o", str(tmp_path / "ens"), "--json")
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert len(result["runs"]) == 2 and result["ensemble"] == "mean"
    assert len(list((tmp_path / "ens").glob("*_probability.nii.gz"))) == 2

    missing = _predict(trained, "--loss", "dce", "--net", "attunet", "-i", str(cohort / "imagesTs"),
                       "-o", str(tmp_path / "none"))
    assert missing.returncode == 1 and "no finished cell run" in missing.stderr
    assert not (tmp_path / "none").exists()  # nothing half-written
    taken = _predict(trained, "--loss", "l1dfl", "--net", "attunet", "-i", str(cohort / "imagesTs"),
                     "-o", str(tmp_path / "ens"))
    assert taken.returncode == 1 and "not empty" in taken.stderr


def test_python_api_mirrors_the_commands(trained, tmp_path, monkeypatch):
    """lossbench.run / predict / evaluate: the commands' core, the same results and the same errors."""
    import lossbench
    from lossbench.errors import LossbenchError

    monkeypatch.setenv("LOSSBENCH_HOME", str(trained["home"]))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", trained["store"])
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", EXPERIMENT)
    _, _, runs = _client(trained)
    cohort = trained["cohort"]
    tiny = dict(epochs=1, val_every=1, patch=16, spacing=8, batch=2, settings={"sw_batch_size": 32},
                net_params={"channels": (4, 8, 16), "strides": (2, 2)}, data_params=["n_folds=2"])
    done = lossbench.run(data=cohort, loss="l1dfl", net="attunet", fold=0, **tiny)  # finished already
    run = runs["l1dfl-attunet-fold0-seed0"]
    assert done.status == "skipped" and done.run_id == run.info.run_id and done.cell == run.info.run_name
    assert done.best_epoch == int(run.data.metrics["best_epoch"])
    with pytest.raises(LossbenchError, match="did you mean 'l1dfl'"):
        lossbench.run(data=cohort, loss="l1dlf", **tiny)
    with pytest.raises(LossbenchError, match="not a usable experiment name"):
        lossbench.run(data=cohort, experiment="../../x", **tiny)

    predicted = lossbench.predict(cohort / "imagesTs", tmp_path / "out", run=run.info.run_id)
    assert predicted.run_ids == [run.info.run_id] and len(predicted.cases) == 2
    evaluated = lossbench.evaluate(pred=tmp_path / "out", gt=cohort / "labelsTs", pet=cohort / "imagesTs",
                                   out=tmp_path / "cases.csv")
    assert sorted(evaluated.cases["case_id"]) == sorted(predicted.cases)
    assert evaluated.cases["dice"].mean() == pytest.approx(run.data.metrics["test_dice_mean"])
    assert (tmp_path / "cases_lesions.csv").exists()
    with pytest.raises(LossbenchError, match="--criterion must be 1, 2 or 3"):
        lossbench.evaluate(pred=tmp_path / "out", gt=cohort / "labelsTs", pet=cohort / "imagesTs", criterion=4)


def test_logging_a_model_leaves_the_process_mlflow_variables_alone(trained, tmp_path, monkeypatch):
    """mlflow.set_tracking_uri() writes MLFLOW_TRACKING_URI into os.environ: after lossbench.run logged its
    model to an explicit store, the process (and what it starts next) still has the user's variables."""
    import lossbench

    monkeypatch.setenv("LOSSBENCH_HOME", str(tmp_path / "home"))
    store = f"sqlite:///{tmp_path / 'explicit.db'}"
    done = lossbench.run(data=trained["cohort"], loss="dl", net="attunet", fold=1, tracking_uri=store, epochs=1,
                         val_every=1, patch=16, spacing=8, batch=2, settings={"sw_batch_size": 32},
                         net_params={"channels": (4, 8, 16), "strides": (2, 2)}, data_params=["n_folds=2"])
    assert done.status == "finished"
    from mlflow.tracking import MlflowClient

    assert MlflowClient(store).get_run(done.run_id).data.tags["lossbench.model_uri"].startswith("models:/")
    assert not {"MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID"} & set(os.environ)


def test_a_dataset_logged_by_two_cells_at_once_is_retried_not_failed(tmp_path):
    """MLflow's database store looks a dataset up, then inserts it: two parallel cells on one split
    can both miss it and the second insert breaks the unique key (seen on PostgreSQL in CI). The
    race cannot be timed in a test, so the second cell's first insert fails as it did there: the
    dataset is then found and linked, and any other error still propagates."""
    from mlflow.exceptions import MlflowException

    from lossbench.tracking import Tracker

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "datasets")
    first, second = tracker.start_run("a", {}), tracker.start_run("b", {})
    dataset = {"name": "psma", "digest": "339619045d52109be64f10b4d801f7ac10a4", "source": "/data/psma"}
    tracker.log_dataset(first, **dataset)
    real = tracker._client.log_inputs
    calls = []

    def racing(run_id, datasets):
        calls.append(run_id)
        if len(calls) == 1:
            raise MlflowException('(psycopg2.errors.UniqueViolation) duplicate key value violates unique constraint '
                                  '"dataset_pk" DETAIL: Key (experiment_id, name, digest) already exists.')
        return real(run_id, datasets=datasets)

    tracker._client.log_inputs = racing
    tracker.log_dataset(second, **dataset)
    assert calls == [second, second]
    inputs = tracker._client.get_run(second).inputs.dataset_inputs
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("psma", dataset["digest"][:36])]

    calls.clear()

    def broken(run_id, datasets):
        calls.append(run_id)
        raise MlflowException("the store is read-only")

    tracker._client.log_inputs = broken
    third = tracker.start_run("c", {})
    with pytest.raises(MlflowException, match="read-only"):
        tracker.log_dataset(third, **dataset)
    assert calls == [third]
