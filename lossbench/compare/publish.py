"""Log a comparison to MLflow (through lossbench.tracking) as a run of kind ``comparison``.

The run is created before the report is written, so that the report can name it; its artifacts are
the report files (under ``report/``); it is FINISHED only once they are all logged, and marked
FAILED if writing or logging the report fails. Tags: ``lossbench.kind = comparison``,
``lossbench.compared_runs`` (the run ids, comma-separated; cut with a pointer to ``report/runs.csv``
beyond MLflow's length limit), ``lossbench.selection`` and, with ``--parent``,
``lossbench.compared_parent``. Params: the options and the number of runs; metrics: the number of
tests run, significant and flagged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossbench.tracking import Tracker

__all__ = ["COMPARED_TAG", "KIND_COMPARISON", "finish_comparison_run", "start_comparison_run"]

KIND_COMPARISON = "comparison"
COMPARED_TAG = "lossbench.compared_runs"


def _compared_tag(run_ids: Sequence[str], limit: int) -> str:
    full = ",".join(run_ids)
    if len(full) <= limit:
        return full
    tail = f",… ({len(run_ids)} runs, all in report/runs.csv)"
    kept: list[str] = []
    for rid in run_ids:
        if len(",".join([*kept, rid])) + len(tail) > limit:
            break
        kept.append(rid)
    return ",".join(kept) + tail


def start_comparison_run(
    tracker: Tracker, run_ids: Sequence[str], options: Mapping[str, Any], *, selection: str,
    parent: str | None = None,
) -> str:
    """Create the comparison run (RUNNING) with its tags and params; returns its id."""
    from lossbench.tracking import KIND_TAG, MAX_PARAM_LENGTH, TrackingError

    tags = {KIND_TAG: KIND_COMPARISON, COMPARED_TAG: _compared_tag(run_ids, MAX_PARAM_LENGTH),
            "lossbench.selection": selection}
    if parent:
        tags["lossbench.compared_parent"] = parent
    try:
        run_id = tracker.start_run(f"compare-{len(run_ids)}-runs", tags)
        tracker.log_params(run_id, {"compare": dict(options), "n_runs": len(run_ids)})
    except Exception as exc:  # noqa: BLE001 - a read-only or broken store: one line
        raise TrackingError(f"cannot log the comparison run to {tracker.uri}: {type(exc).__name__}: {exc}") from None
    return run_id


def finish_comparison_run(tracker: Tracker, run_id: str, folder: Path, metrics: Mapping[str, float]) -> None:
    """Log every file of the report folder under ``report/``, the counts, and mark the run FINISHED."""
    from lossbench.tracking import TrackingError

    folder = Path(folder)
    by_dir: dict[str, list[Path]] = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.parent.relative_to(folder).as_posix()
        by_dir.setdefault("report" if rel == "." else f"report/{rel}", []).append(path)
    try:
        for artifact_path, files in by_dir.items():
            tracker.log_artifacts(run_id, files, artifact_path)
        tracker.log_metrics(run_id, metrics)
        tracker.finish(run_id)
    except Exception as exc:  # noqa: BLE001 - artifact store full or unwritable: one line
        message = f"cannot log the report to the comparison run {run_id}: {type(exc).__name__}: {exc}"
        raise TrackingError(message) from None
