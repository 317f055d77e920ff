"""Log a comparison to MLflow (through lossbench.tracking) as a run of kind ``comparison``.

The run is created before the report is written, so that the report can name it; its artifacts are
the report files (under ``report/``); it is FINISHED only once they are all logged, and marked
FAILED if writing or logging the report fails. Tags: ``lossbench.kind = comparison``,
``lossbench.compared_runs`` (the run ids, comma-separated; cut with a pointer to ``report/runs.csv``
beyond MLflow's length limit), ``lossbench.selection`` and, with ``--parent``,
``lossbench.compared_parent``. Params: the options and the number of runs; metrics: the number of
tests run, significant and flagged.

Links both ways: the comparison run's description (``mlflow.note.content``, shown and rendered as
Markdown by the MLflow UI) links every compared cell run, and once the comparison is FINISHED each
cell run gets the tag ``lossbench.comparison`` (the newest comparison that used it) and a line in
``lossbench.comparisons`` (every one, newest first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lossbench.tracking import Tracker

__all__ = ["COMPARED_TAG", "COMPARISONS_TAG", "COMPARISON_TAG", "KIND_COMPARISON", "finish_comparison_run", "link_cells",
           "start_comparison_run"]

KIND_COMPARISON = "comparison"
COMPARED_TAG = "lossbench.compared_runs"
#: On a cell run: the newest comparison run that used it, and every one (comma-separated, newest first).
COMPARISON_TAG = "lossbench.comparison"
COMPARISONS_TAG = "lossbench.comparisons"


def _note(tracker: Tracker, run_ids: Sequence[str], selection: str, limit: int) -> str:
    """The comparison's description: what was compared, with a link to each cell run."""
    head = f"lossbench comparison of {len(run_ids)} cell runs ({selection}); report under artifacts report/.\n\n"
    lines: list[str] = []
    for rid in run_ids:
        line = f"- [{rid}](#/experiments/{tracker.experiment_id}/runs/{rid})"
        if len(head) + sum(len(x) + 1 for x in lines) + len(line) + 80 > limit:
            lines.append(f"- … and {len(run_ids) - len(lines)} more (tag {COMPARED_TAG}, report/runs.csv)")
            break
        lines.append(line)
    return head + "\n".join(lines)


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

    from lossbench.tracking import NOTE_TAG

    tags = {KIND_TAG: KIND_COMPARISON, COMPARED_TAG: _compared_tag(run_ids, MAX_PARAM_LENGTH),
            "lossbench.selection": selection, NOTE_TAG: _note(tracker, run_ids, selection, MAX_PARAM_LENGTH)}
    if parent:
        tags["lossbench.compared_parent"] = parent
    try:
        run_id = tracker.start_run(f"compare-{len(run_ids)}-runs", tags)
        tracker.log_params(run_id, {"compare": dict(options), "n_runs": len(run_ids)})
    except Exception as exc:  # noqa: BLE001 - a read-only or broken store: one line
        raise TrackingError(f"cannot log the comparison run to {tracker.uri}: {type(exc).__name__}: {exc}") from None
    return run_id


def finish_comparison_run(tracker: Tracker, run_id: str, folder: Path, metrics: Mapping[str, float],
                          run_ids: Sequence[str] | None = None) -> None:
    """Log every file of the report folder under ``report/``, the counts, mark the run FINISHED, and
    tag the compared cell runs ``run_ids`` (default: those of its tag) with it."""
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
    link_cells(tracker, run_id, run_ids)


def link_cells(tracker: Tracker, run_id: str, run_ids: Sequence[str] | None = None) -> None:
    """Tag every cell run of the finished comparison ``run_id`` with it (the link back)."""
    from lossbench.tracking import MAX_PARAM_LENGTH, TrackingError

    if run_ids is None:
        compared = tracker.run(run_id).tags.get(COMPARED_TAG, "")
        run_ids = [r for r in compared.split(",") if len(r) == 32 and r.isalnum()]
    cells = list(run_ids)
    try:
        for cell in cells:
            earlier = [r for r in tracker.run(cell).tags.get(COMPARISONS_TAG, "").split(",") if r and r != run_id]
            every = ",".join([run_id, *earlier])[:MAX_PARAM_LENGTH]
            tracker.set_tags(cell, {COMPARISON_TAG: run_id, COMPARISONS_TAG: every})
    except Exception as exc:  # noqa: BLE001 - a cell run that cannot be tagged: one line
        raise TrackingError(f"cannot link the cell runs to the comparison run {run_id}: "
                            f"{type(exc).__name__}: {exc}") from None
