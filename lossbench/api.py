"""The Python API: ``lossbench.run``, ``lossbench.evaluate``, ``lossbench.compare``, ``lossbench.predict``.

Each function is what the command of the same name does, without the terminal: the same options
(as keyword arguments, ``-`` spelt ``_``), the same checks, the same :class:`lossbench.errors.LossbenchError`
messages (the CLI prints them as its one ``error:`` line), the same files and MLflow runs. The commands
in :mod:`lossbench.cli` call these functions and only add progress display and printing.

This module imports nothing heavy at import time; torch, MONAI, pandas and MLflow are imported when
a function is called. ``import lossbench`` stays light: the functions are looked up lazily.

Example (a tiny cell on the synthetic cohort, evaluated and compared)::

    import lossbench

    runs = [lossbench.run(loss=loss, epochs=1, patch="32", tracking_uri="sqlite:///mlflow.db")
            for loss in ("dl", "l1dfl")]
    report = lossbench.compare(runs=[r.run_id for r in runs], tracking_uri="sqlite:///mlflow.db",
                               out="report", n_boot=0)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from lossbench.errors import LossbenchError

__all__ = ["ComparisonResult", "EvaluationResult", "RunResult", "compare", "evaluate", "predict", "run"]


# -- run ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RunResult:
    """What :func:`run` did: the cell, its MLflow run and its test summary.

    ``status`` is ``finished``, or ``skipped`` when the cell already had a finished run (``force``
    runs it again). ``best_epoch`` counts from 1, as the CLI and the MLflow metric say.
    """

    cell: str
    run_id: str
    status: str
    best_epoch: int
    best_val_dice: float
    summary: dict[str, float]
    experiment: str
    tracking_uri: str
    run_url: str
    resumed_after_epoch: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _settings(settings: Mapping[str, Any] | Sequence[str] | None, **flags: Any) -> dict[str, Any]:
    from lossbench.config import parse_assignments

    if settings is None:
        base: dict[str, Any] = {}
    elif isinstance(settings, Mapping):
        base = dict(settings)
    else:
        base = parse_assignments(list(settings), "--set")
    return {**base, **{k: v for k, v in flags.items() if v is not None}}


def _assignments(values: Mapping[str, Any] | Sequence[str] | None) -> list[str]:
    if values is None:
        return []
    if isinstance(values, Mapping):
        return [f"{k}={','.join(map(str, v)) if isinstance(v, (list, tuple)) else v}" for k, v in values.items()]
    return list(values)


def run(
    *,
    loss: str | None = None,
    net: str | None = None,
    dataset: str | None = None,
    data: str | Path | None = None,
    fold: int | None = None,
    seed: int | None = None,
    preset: str | None = None,
    epochs: int | None = None,
    patch: str | int | None = None,
    batch: int | None = None,
    lr: float | None = None,
    val_every: int | None = None,
    spacing: str | float | None = None,
    nproc: int | None = None,
    settings: Mapping[str, Any] | Sequence[str] | None = None,
    loss_params: Mapping[str, Any] | Sequence[str] | None = None,
    net_params: Mapping[str, Any] | Sequence[str] | None = None,
    data_params: Mapping[str, Any] | Sequence[str] | None = None,
    config: str | Path | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    progress: Any = None,
    on_prepared: Callable[[Any], None] | None = None,
    on_start: Callable[[str, bool], None] | None = None,
    extra_params: dict[str, Any] | None = None,
    parent_run_id: str | None = None,
    registry: Any = None,
) -> RunResult:
    """Train and evaluate one cell (loss × network × fold × seed) and log it to MLflow: ``lossbench run``.

    Settings come from the preset, then ``config`` (a TOML file), then the arguments. ``settings``
    holds any training setting (``{"sw_batch_size": 8}`` or ``["sw_batch_size=8"]``, as ``-S``);
    ``loss_params``, ``net_params`` and ``data_params`` likewise (``-L``, ``-N``, ``-D``). Everything
    is checked before training; a bad value raises :class:`LossbenchError` with the CLI's message.
    ``experiment`` and ``tracking_uri`` default to ``MLFLOW_EXPERIMENT_NAME`` (else ``lossbench``) and
    ``MLFLOW_TRACKING_URI`` (else the SQLite store under ``$LOSSBENCH_HOME``), as in the CLI.
    ``progress`` is an optional ``rich.progress.Progress``; ``on_prepared(prepared)`` is called once
    the data and settings are checked, ``on_start(run_id, resumed)`` once the MLflow run exists.
    ``registry`` is a :class:`lossbench.registry.Registry` (default: the installed plugins).
    """
    from lossbench.cli._common import debug
    from lossbench.cli._common import registry as installed_registry
    from lossbench.settings import build_config
    from lossbench.tracking import check_experiment_name, default_experiment

    experiment = experiment or default_experiment()
    check_experiment_name(experiment)
    reg = registry if registry is not None else installed_registry()
    cfg = build_config(
        reg, config=Path(config) if config is not None else None, loss=loss, net=net, dataset=dataset,
        data=str(data) if data is not None else None, fold=fold, seed=seed, preset=preset,
        loss_param=_assignments(loss_params), net_param=_assignments(net_params),
        data_param=_assignments(data_params),
        train=_settings(settings, epochs=epochs, patch=None if patch is None else str(patch), batch=batch, lr=lr,
                        val_every=val_every, spacing=None if spacing is None else str(spacing), nproc=nproc),
    )
    from lossbench.engine import CellAlreadyFinished, finished_result, prepare, resolve_device, run_cell

    resolve_device(device)
    prepared = prepare(cfg, reg)
    if on_prepared is not None:
        on_prepared(prepared)
    started: list[str] = []  # the MLflow run, once one exists: what a failure message may say about it

    def started_run(run_id: str, resumed: bool) -> None:
        started.append(run_id)
        if on_start is not None:
            on_start(run_id, resumed)

    try:
        if cfg.nproc > 1:  # DDP under torchrun: rank 0 shows its own progress and reports back
            from lossbench.distributed import launch

            if progress is not None:
                progress.stop()
            result = launch(prepared, tracking_uri=tracking_uri, experiment=experiment, device=device, resume=resume,
                            force=force, parent_run_id=parent_run_id, extra_params=extra_params)
        else:
            result = run_cell(
                prepared, tracking_uri=tracking_uri, experiment=experiment, device=device, resume=resume,
                force=force, progress=progress, extra_params=extra_params, parent_run_id=parent_run_id,
                on_start=started_run,
            )
    except CellAlreadyFinished as done:
        result = finished_result(tracking_uri, experiment, done.run_id)
    except LossbenchError:
        raise
    except Exception as exc:  # noqa: BLE001 - say what happened to the run (if any) and how to go on
        if debug():
            raise
        if started:
            raise LossbenchError(
                f"training failed: {type(exc).__name__}: {exc} (MLflow run {started[0]} is marked FAILED; "
                "run the same command again to resume from the last checkpoint, LOSSBENCH_DEBUG=1 for the traceback)"
            ) from exc
        raise LossbenchError(
            f"could not start the run: {type(exc).__name__}: {exc} (no MLflow run was created; "
            "LOSSBENCH_DEBUG=1 for the traceback)"
        ) from exc
    return RunResult(
        cell=cfg.name, run_id=result.run_id, status=result.status, best_epoch=result.best_epoch + 1,
        best_val_dice=result.best_val_dice, summary=dict(result.summary), experiment=result.experiment,
        tracking_uri=result.tracking_uri, run_url=result.run_url,
        resumed_after_epoch=None if result.resumed_from is None else result.resumed_from + 1,
    )


# -- evaluate ----------------------------------------------------------------------------------------
@dataclasses.dataclass
class EvaluationResult:
    """What :func:`evaluate` wrote and found: the per-case and per-lesion tables (pandas) and their summary."""

    cases: Any
    lesions: Any
    summary: Any
    out: Path
    lesions_out: Path
    #: Predictions without ground truth (not evaluated).
    unmatched: list[str]

    def as_dict(self) -> dict[str, Any]:
        """Plain values: table paths, the summary per metric and the per-case rows a reviewer reads."""
        columns = [c for c in ("case_id", "dice", "f1", "tp", "fp", "fn", "sensitivity", "precision",
                               "fp_volume_ml", "fn_volume_ml", "gt_lesion_count") if c in self.cases.columns]
        return {
            "out": str(self.out), "lesions_out": str(self.lesions_out), "n_cases": int(len(self.cases)),
            "unmatched_predictions": list(self.unmatched),
            "summary": {metric: {k: _num(v) for k, v in row.items()} for metric, row in
                        self.summary.to_dict(orient="index").items()},
            "cases": [{k: _num(v) for k, v in row.items()} for row in
                      self.cases[columns].to_dict(orient="records")],
        }


def _num(value: Any) -> Any:
    if hasattr(value, "item") and getattr(value, "shape", None) == ():
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def lesions_path(out: Path) -> Path:
    """``cases.csv`` -> ``cases_lesions.csv`` (the per-lesion table beside the per-case one)."""
    return out.with_name(f"{out.stem}_lesions{out.suffix}")


def evaluate(
    *,
    pred: str | Path,
    gt: str | Path,
    pet: str | Path,
    criterion: int = 3,
    iou: float = 0.5,
    connectivity: int = 18,
    strata: str = "fixed",
    empty_dice: str | float = "nan",
    out: str | Path = "evaluation.csv",
    lesions_out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate a folder of predicted masks against ground truth: ``lossbench evaluate``.

    Writes the per-case table ``out`` and the per-lesion table ``lesions_out`` (default: beside
    ``out`` with a ``_lesions`` suffix), .csv or .parquet; ``empty_dice`` is ``"nan"`` (as in the
    study) or ``1`` for cases where GT and prediction are both empty.
    """
    from lossbench.evaluation import evaluate_folders, summarize
    from lossbench.evaluation.io import find_cases, table_format, write_tables

    pred, gt, pet, out = Path(pred), Path(gt), Path(pet), Path(out)
    if criterion not in (1, 2, 3):
        raise LossbenchError(f"--criterion must be 1, 2 or 3, got {criterion}")
    if connectivity not in (6, 18, 26):
        raise LossbenchError(f"--connectivity must be 6, 18 or 26, got {connectivity}")
    if not 0.0 < iou <= 1.0:
        raise LossbenchError(f"--iou must be in (0, 1], got {iou}")
    if strata not in ("fixed", "quantile"):
        raise LossbenchError(f"--strata must be fixed or quantile, got {strata!r}")
    if str(empty_dice) not in ("nan", "1", "1.0"):
        raise LossbenchError(f"--empty-dice must be nan or 1, got {empty_dice!r}")
    lesions_file = Path(lesions_out) if lesions_out is not None else lesions_path(out)
    table_format(out)  # fail on a bad extension before any work
    table_format(lesions_file)
    if out.resolve() == lesions_file.resolve():
        raise LossbenchError("--out and --lesions-out name the same file")
    _, extra = find_cases(pred, gt, pet)
    cases, lesions = evaluate_folders(
        pred, gt, pet, criterion=criterion, iou_threshold=iou, connectivity=connectivity, strata=strata,
        empty_dice=float("nan") if str(empty_dice) == "nan" else 1.0, progress=progress,
    )
    write_tables([(cases, out), (lesions, lesions_file)])
    return EvaluationResult(cases=cases, lesions=lesions, summary=summarize(cases), out=out,
                            lesions_out=lesions_file, unmatched=list(extra))


# -- compare -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class ComparisonResult:
    """What :func:`compare` did: the :class:`lossbench.compare.analysis.Comparison`, the report folder
    and the MLflow comparison run."""

    comparison: Any
    out: Path
    run_id: str
    compared_runs: list[str]
    counts: dict[str, float]
    selection: str

    def as_dict(self) -> dict[str, Any]:
        """Plain values: the report, the comparison run, the counts, the notes, the mean (median) per
        loss over all cases and the significant primary differences."""
        from lossbench.compare.stats import ALL

        comp = self.comparison
        summary = comp.summary[comp.summary["stratum"] == ALL]
        t = comp.tests
        fams = t["family"].eq("confirmatory") | t["family"].str.startswith("stratum:")
        sig = t[(t["analysis"] == "primary") & fams & t["significant"].astype(bool)]
        keep = [c for c in ("network", "family", "stratum", "level", "metric", "loss_a", "loss_b", "n", "estimate",
                            "sci_low", "sci_high", "better", "p_adjusted") if c in sig.columns]
        records = lambda frame: [{k: _num(v) for k, v in row.items()} for row in frame.to_dict(orient="records")]  # noqa: E731
        return {
            "report": str(self.out.resolve()), "comparison_run_id": self.run_id, "selection": self.selection,
            "compared_runs": list(self.compared_runs), "counts": {k: _num(v) for k, v in self.counts.items()},
            "options": {k: _num(v) for k, v in comp.options.items()}, "metrics": list(comp.metrics),
            "losses": {network: list(losses) for network, losses in comp.losses.items()},
            "notes": list(comp.notes),
            "summary": records(summary[[c for c in ("network", "loss", "metric", "n", "mean", "median")
                                        if c in summary.columns]]),
            "significant": records(sig.sort_values("p_adjusted")[keep]),
        }


def default_report_folder(experiment: str) -> Path:
    import re

    return Path(f"lossbench-report-{re.sub(r'[^A-Za-z0-9._-]+', '-', experiment).strip('-') or 'experiment'}")


def compare(
    *,
    experiment: str | None = None,
    parent: str | None = None,
    runs: str | Sequence[str] | None = None,
    tracking_uri: str | None = None,
    metrics: str | Sequence[str] | None = None,
    baseline: str | None = None,
    primary: str = "dice",
    correction: str = "holm",
    alpha: float = 0.05,
    seeds: str = "mean",
    missing: str = "drop",
    posthoc: str = "nemenyi",
    ba_scale: str = "linear",
    strata: str = "fixed",
    min_pairs: int = 6,
    n_boot: int = 1000,
    seed: int = 0,
    out: str | Path | None = None,
    on_status: Callable[[str], None] | None = None,
) -> ComparisonResult:
    """Compare losses on the same test cases from their MLflow runs: ``lossbench compare``.

    ``runs`` (ids, a list or comma-separated) or ``parent`` (a matrix run) select the runs, else every
    finished cell run of ``experiment``. Writes the report folder ``out`` (default
    ``./lossbench-report-EXPERIMENT``, replaced only once complete) and logs a comparison run linked
    to the cell runs. ``n_boot`` is the CLI's ``--bootstrap``.
    """
    import datetime
    import traceback

    from lossbench import __version__
    from lossbench.compare.analysis import compare_cases, parse_metrics
    from lossbench.compare.loader import load_cases, load_pictures, open_store, parse_run_ids, runs_frame, select_runs
    from lossbench.compare.publish import finish_comparison_run, start_comparison_run
    from lossbench.compare.report import atomic_folder, check_out_folder, write_report
    from lossbench.tracking import default_experiment

    choices = {"correction": (correction, ("holm", "bonferroni", "fdr_bh")), "seeds": (seeds, ("mean", "each")),
               "missing": (missing, ("drop", "worst")), "posthoc": (posthoc, ("nemenyi", "conover")),
               "ba-scale": (ba_scale, ("linear", "log")), "strata": (strata, ("fixed", "quantile"))}
    for name, (value, allowed) in choices.items():
        if value not in allowed:
            raise LossbenchError(f"--{name} must be one of {', '.join(allowed)}, got {value!r}")
    if not 0.0 < alpha < 1.0:
        raise LossbenchError(f"--alpha must be in (0, 1), got {alpha}")
    if min_pairs < 1:
        raise LossbenchError(f"--min-pairs must be at least 1, got {min_pairs}")
    if n_boot < 0:
        raise LossbenchError(f"--bootstrap must be 0 or more, got {n_boot}")
    if parent and runs:
        raise LossbenchError("give either --parent or --runs, not both")
    if metrics is not None and not isinstance(metrics, str):
        metrics = ",".join(metrics)
    if runs is not None and not isinstance(runs, str):
        runs = ",".join(runs)
    metric_names = parse_metrics(metrics)
    primary_name = parse_metrics(primary)[0]
    run_ids = parse_run_ids(runs) if runs else None
    out = Path(out) if out is not None else default_report_folder(experiment or default_experiment())
    check_out_folder(out)
    status = on_status or (lambda text: None)
    experiment = experiment or default_experiment()

    status("reading the runs from MLflow…")
    tracker = open_store(tracking_uri, experiment)
    records, notes = select_runs(tracker, parent=parent, run_ids=run_ids)
    cases = load_cases(tracker, records)
    pictures, picture_notes = load_pictures(tracker, records, cases)
    status(f"comparing {len(records)} runs…")
    comp = compare_cases(
        cases, metric_names, runs=runs_frame(records), baseline=baseline, primary=primary_name,
        correction=correction, alpha=alpha, seeds=seeds, strata=strata, min_pairs=min_pairs,
        n_boot=n_boot, seed=seed, missing=missing, posthoc=posthoc, ba_scale=ba_scale,
    )
    comp.notes[:0] = notes + picture_notes
    selection = (f"children of matrix run {parent}" if parent else "runs given with --runs" if run_ids
                 else "all finished cell runs")
    tested = int(comp.tests["p_adjusted"].notna().sum())
    controlled = comp.tests["family"].isin(["confirmatory", "omnibus", "posthoc"])
    counts = {"n_tests": float(tested), "n_significant": float(comp.tests.loc[controlled, "significant"].sum()),
              "n_confirmatory_significant": float(comp.tests.loc[(comp.tests["family"] == "confirmatory")
                                                                 & (comp.tests["analysis"] == "primary"),
                                                                 "significant"].sum()),
              "n_flagged": float((comp.tests["flag"] != "").sum()), "n_runs": float(len(records))}
    status("writing the report…")
    compared = [r.run_id for r in records]
    with atomic_folder(out) as tmp:
        run_id = start_comparison_run(tracker, compared, comp.options, selection=selection, parent=parent)
        try:
            context = {
                "experiment": experiment, "tracking_uri": tracker.uri, "selection": selection,
                "comparison_run_id": run_id, "version": __version__,
                "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                "compared_runs": compared,
            }
            write_report(comp, tmp, context, pictures=pictures)
            finish_comparison_run(tracker, run_id, tmp, counts, compared)
        except BaseException as exc:
            tracker.fail(run_id, f"{type(exc).__name__}: {exc}\n" + traceback.format_exc(limit=6))
            raise
    return ComparisonResult(comparison=comp, out=out, run_id=run_id, compared_runs=compared, counts=counts,
                            selection=selection)


# -- predict -----------------------------------------------------------------------------------------
def predict(input_dir: str | Path, out: str | Path, **options: Any) -> Any:
    """Apply a trained cell (or its fold ensemble) to new cases: ``lossbench predict``.

    The options are :func:`lossbench.predict.predict`'s (``run=`` or ``loss=`` + ``net=`` with
    ``fold=`` (a number or ``"all"``) and ``seed=``; ``ensemble="vote"|"mean"``, ``probabilities``,
    ``labels``, ``device``, ``experiment``, ``tracking_uri``, ``overwrite``); returns its
    :class:`lossbench.predict.PredictResult`.
    """
    from lossbench.predict import predict as _predict

    return _predict(input_dir, out, **options)
