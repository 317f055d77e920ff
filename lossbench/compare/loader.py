"""Read the runs to compare, and their per-case tables, back from MLflow (through lossbench.tracking).

Nothing comes from memory: every number of a comparison is rebuilt from the runs' logged
``evaluation/cases.csv`` artifacts and the runs' tags.

Which runs
----------
- default: every FINISHED run of the experiment tagged ``lossbench.kind = cell``;
- ``parent``: the FINISHED cell runs of that matrix run: its children (``mlflow.parentRunId``) and
  the runs its ``cells.json`` artifact lists (cells the matrix found finished already, by an earlier
  matrix or ``lossbench run``, and so skipped: they keep their first parent);
- ``run_ids``: exactly these runs, which must exist in the experiment, be FINISHED and carry the
  ``lossbench.loss`` and ``lossbench.network`` tags.

Unfinished runs (RUNNING, FAILED, KILLED) found by a search are skipped and counted in the notes.
A cell run again with ``--force`` leaves two finished runs with the same loss, network, fold and
seed: the newest one is used (noted); listing both with ``run_ids`` is an error. Runs of different
presets are different experiments and are never mixed (an error asks to choose with ``--parent``
or ``--runs``).
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

from lossbench.errors import LossbenchError
from lossbench.tracking import KIND_TAG

if TYPE_CHECKING:
    import pandas as pd

    from lossbench.tracking import RunRecord, Tracker

__all__ = ["CASES_ARTIFACT", "CellRun", "load_cases", "open_store", "parse_run_ids", "runs_frame", "select_runs"]

CASES_ARTIFACT = "evaluation/cases.csv"
MATRIX_CELLS = "cells.json"
KIND_CELL = "cell"
_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclasses.dataclass(frozen=True)
class CellRun:
    """What a comparison needs to know about one cell run (from its tags and params)."""

    run_id: str
    name: str
    loss: str
    network: str
    fold: int | str
    seed: int | str
    preset: str
    status: str
    start_time: int
    #: The run's training budget and data (its ``config.*`` and ``split.sha256`` params, minus
    #: loss, network, fold and seed): runs compared with each other must agree on it.
    budget: tuple[tuple[str, str], ...] = ()

    @property
    def replicate(self) -> tuple[str, str, str, str]:
        return (self.loss, self.network, str(self.fold), str(self.seed))

    def label(self) -> str:
        return f"{self.name or self.run_id} ({self.run_id})"


def _int_or_str(value: str | None) -> int | str:
    if value is None or value == "":
        return 0
    try:
        return int(value)
    except ValueError:
        return value


def _record(run: RunRecord) -> CellRun:
    tags = run.tags
    return CellRun(
        run_id=run.id, name=run.name, loss=tags.get("lossbench.loss", ""),
        network=tags.get("lossbench.network", ""), fold=_int_or_str(tags.get("lossbench.fold")),
        seed=_int_or_str(tags.get("lossbench.seed")), preset=tags.get("lossbench.preset", ""),
        status=run.status, start_time=run.start_time,
        budget=tuple(sorted((k, v) for k, v in run.params.items() if _is_budget(k))),
    )


_NOT_BUDGET = ("config.loss", "config.network", "config.fold", "config.seed")


def _is_budget(param: str) -> bool:
    if param == "split.sha256":
        return True
    return param.startswith("config.") and not any(param == k or param.startswith(k + "_params.") or
                                                   param.startswith(k + ".") for k in _NOT_BUDGET)


def _check_same_budget(records: Sequence[CellRun]) -> None:
    """Runs that differ in anything but loss, network, fold and seed are not compared silently."""
    first = dict(records[0].budget)
    for rec in records[1:]:
        other = dict(rec.budget)
        diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
        if diff:
            key = diff[0]
            raise LossbenchError(
                f"runs {records[0].label()} and {rec.label()} differ in {key} ({first.get(key)!r} vs "
                f"{other.get(key)!r}{f' and {len(diff) - 1} more' if len(diff) > 1 else ''}): losses are compared "
                "under one budget and one split; choose one set with --parent or --runs"
            )


def parse_run_ids(text: str) -> list[str]:
    """``"id1,id2"`` -> a list of MLflow run ids (32 hex digits), in order, without repeats."""
    ids = list(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    if not ids:
        raise LossbenchError("--runs is empty: give run ids separated by commas")
    for rid in ids:
        _check_run_id(rid, "--runs")
    return ids


def _check_run_id(rid: str, option: str) -> None:
    if not _RUN_ID.match(rid):
        raise LossbenchError(f"{option}: {rid!r} is not an MLflow run id (32 hexadecimal digits)")


def open_store(tracking_uri: str | None, experiment: str) -> Tracker:
    """Open an existing experiment for reading; a missing SQLite store or experiment is an error."""
    from lossbench import paths
    from lossbench.tracking import Tracker

    uri = tracking_uri or paths.default_tracking_uri()
    if uri.startswith("sqlite:///"):
        path = Path(unquote(uri[len("sqlite:///"):].split("?", 1)[0]))
        if not path.exists():
            raise LossbenchError(f"no tracking store at {path}: nothing has been run there yet "
                                 "(set LOSSBENCH_HOME or --tracking-uri to the store of your runs)")
    return Tracker(tracking_uri, experiment, create=False)


def select_runs(
    tracker: Tracker, *, parent: str | None = None, run_ids: Sequence[str] | None = None
) -> tuple[list[CellRun], list[str]]:
    """The runs to compare, and notes on what was skipped (module docstring)."""
    if parent and run_ids:
        raise LossbenchError("give either --parent or --runs, not both")
    notes: list[str] = []
    where = f"experiment {tracker.experiment!r} ({tracker.uri})"
    if run_ids:
        records = []
        for rid in run_ids:
            _check_run_id(rid, "--runs")
            run = tracker.run(rid)
            _check_experiment(run, tracker)
            rec = _record(run)
            if run.deleted:
                raise LossbenchError(f"run {rec.label()} is deleted")
            if rec.status != "FINISHED":
                raise LossbenchError(f"run {rec.label()} is {rec.status}, not FINISHED: it has no complete evaluation")
            if not rec.loss or not rec.network:
                raise LossbenchError(f"run {rec.label()} has no lossbench.loss / lossbench.network tags: "
                                     "it is not a lossbench cell run")
            records.append(rec)
        seen: dict[tuple[str, str, str, str], CellRun] = {}
        for rec in records:
            if rec.replicate in seen:
                raise LossbenchError(
                    f"runs {seen[rec.replicate].label()} and {rec.label()} are both loss {rec.loss}, network "
                    f"{rec.network}, fold {rec.fold}, seed {rec.seed}: list only one of them"
                )
            seen[rec.replicate] = rec
    else:
        if parent:
            _check_run_id(parent, "--parent")
            _check_experiment(tracker.run(parent), tracker)
            found = tracker.runs_of(parent=parent)
            known = {r.id for r in found}
            missing = []
            for rid in _matrix_cells(tracker, parent):  # cells finished before, by another matrix or run
                if rid in known:
                    continue
                try:
                    run = tracker.run(rid)
                except LossbenchError:
                    missing.append(rid)
                    continue
                if run.experiment_id == tracker.experiment_id and not run.deleted:
                    found.append(run)
                    known.add(rid)
                else:
                    missing.append(rid)
            if missing:
                notes.append(f"{len(missing)} run(s) listed in the matrix's {MATRIX_CELLS} are gone or deleted: "
                             + ", ".join(missing[:5]) + (" …" if len(missing) > 5 else ""))
            found = [r for r in found if r.tags.get(KIND_TAG) == KIND_CELL]
            found.sort(key=lambda r: -r.start_time)
            where = f"matrix run {parent}"
        else:
            found = tracker.runs_of(kind=KIND_CELL)
        all_records = [_record(r) for r in found]  # newest first
        unfinished = Counter(rec.status for rec in all_records if rec.status != "FINISHED")
        if unfinished:
            notes.append("skipped unfinished runs: " + ", ".join(f"{n} {s}" for s, n in sorted(unfinished.items())))
        records, dropped = [], []
        kept: set[tuple[str, str, str, str]] = set()
        for rec in all_records:
            if rec.status != "FINISHED":
                continue
            if rec.replicate in kept:
                dropped.append(rec)
                continue
            kept.add(rec.replicate)
            records.append(rec)
        if dropped:
            notes.append(f"{len(dropped)} older finished run(s) of the same loss, network, fold and seed left out "
                         f"(the newest is used): {', '.join(r.run_id for r in dropped[:5])}"
                         + (" …" if len(dropped) > 5 else ""))
        if not records:
            raise LossbenchError(f"no finished cell runs in {where}; run `lossbench run` or `lossbench matrix` first")
    presets = Counter(rec.preset for rec in records)
    if len(presets) > 1:
        shown = ", ".join(f"{p or '(none)'}: {n} runs" for p, n in sorted(presets.items()))
        raise LossbenchError(f"the selected runs mix presets ({shown}); choose one set with --parent or --runs")
    _check_same_budget(records)
    records.sort(key=lambda r: (r.network, r.loss, str(r.fold), str(r.seed)))
    return records, notes


def _matrix_cells(tracker: Tracker, parent: str) -> list[str]:
    """Run ids listed in the matrix run's ``cells.json`` (empty if it has none)."""
    import json

    if not tracker.has_artifact(parent, MATRIX_CELLS):
        return []
    try:
        rows = json.loads(tracker.read_text(parent, MATRIX_CELLS))
    except ValueError as exc:  # a torn artifact: one line naming it
        raise LossbenchError(f"cannot read {MATRIX_CELLS} of matrix run {parent}: {exc}") from None
    return [str(row["run_id"]) for row in rows if isinstance(row, dict) and row.get("run_id")]


def _check_experiment(run: RunRecord, tracker: Tracker) -> None:
    if run.experiment_id != tracker.experiment_id:
        raise LossbenchError(
            f"run {run.id} belongs to another experiment (id {run.experiment_id}), not to "
            f"{tracker.experiment!r}; pass that experiment's name with --experiment"
        )


def load_cases(tracker: Tracker, runs: Sequence[CellRun]) -> pd.DataFrame:
    """Concatenated ``evaluation/cases.csv`` of ``runs``, with columns run_id, loss, network, fold, seed."""
    import pandas as pd

    lacking = [rec for rec in runs if not tracker.has_artifact(rec.run_id, CASES_ARTIFACT)]
    if lacking:
        shown = ", ".join(rec.label() for rec in lacking[:3]) + (" …" if len(lacking) > 3 else "")
        raise LossbenchError(
            f"{len(lacking)} run(s) have no {CASES_ARTIFACT} (their evaluation never finished or was not "
            f"logged): {shown}"
        )
    tables = []
    for rec in runs:
        table = tracker.read_table(rec.run_id, CASES_ARTIFACT, dtype={"case_id": str})
        if "case_id" not in table.columns:
            raise LossbenchError(f"{CASES_ARTIFACT} of run {rec.label()} has no case_id column")
        if table["case_id"].duplicated().any():
            dup = table.loc[table["case_id"].duplicated(), "case_id"].iloc[0]
            raise LossbenchError(f"{CASES_ARTIFACT} of run {rec.label()} lists case {dup!r} twice")
        table = table.drop(columns=[c for c in ("run_id", "loss", "network", "fold", "seed") if c in table])
        table.insert(0, "seed", rec.seed)
        table.insert(0, "fold", rec.fold)
        table.insert(0, "network", rec.network)
        table.insert(0, "loss", rec.loss)
        table.insert(0, "run_id", rec.run_id)
        tables.append(table)
    return pd.concat(tables, ignore_index=True)


def runs_frame(runs: Sequence[CellRun]) -> pd.DataFrame:
    """The runs as a table (run_id, name, loss, network, fold, seed, preset)."""
    import pandas as pd

    return pd.DataFrame(
        [{"run_id": r.run_id, "name": r.name, "loss": r.loss, "network": r.network, "fold": r.fold, "seed": r.seed,
          "preset": r.preset} for r in runs],
        columns=["run_id", "name", "loss", "network", "fold", "seed", "preset"],
    )


PICTURES = "pictures"


def load_pictures(tracker: Tracker, runs: Sequence[CellRun], cases: pd.DataFrame, *,
                  per_network: int = 4) -> tuple[dict[str, list[tuple[str, dict[str, bytes]]]], list[str]]:
    """PET MIP pictures of a few test cases per network, one per loss, for the report.

    For each network the first (fold, seed) that every loss ran is used; its cases are ordered by
    ground-truth lesion count then TMTV and ``per_network`` of them are taken at even steps, so the
    few shown span the strata. Runs logged before pictures existed are skipped (noted).
    Returns ``{network: [(case_id, {loss: png})]}`` and notes.
    """
    out: dict[str, list[tuple[str, dict[str, bytes]]]] = {}
    notes: list[str] = []
    for network in sorted({r.network for r in runs}):
        mine = [r for r in runs if r.network == network]
        losses = sorted({r.loss for r in mine})
        replicates = sorted({(str(r.fold), str(r.seed)) for r in mine})
        shared = [fs for fs in replicates
                  if all(any(r.loss == loss and (str(r.fold), str(r.seed)) == fs for r in mine) for loss in losses)]
        if not shared:
            continue
        fold, seed = shared[0]
        chosen = {r.loss: r for r in mine if (str(r.fold), str(r.seed)) == (fold, seed)}
        first = chosen[losses[0]]
        table = cases[cases["run_id"] == first.run_id]
        if "gt_lesion_count" in table and "gt_tmtv_ml" in table:
            table = table.sort_values(["gt_lesion_count", "gt_tmtv_ml", "case_id"])
        ids = list(table["case_id"])
        if not ids:
            continue
        step = max(len(ids) / per_network, 1.0)
        picked = list(dict.fromkeys(ids[min(len(ids) - 1, int(j * step + step / 2))]
                                    for j in range(min(per_network, len(ids)))))
        rows = []
        for case_id in picked:
            images = {}
            for loss in losses:
                artifact = f"{PICTURES}/{case_id}.png"
                if tracker.has_artifact(chosen[loss].run_id, artifact):
                    images[loss] = tracker.read_bytes(chosen[loss].run_id, artifact)
            if images:
                rows.append((case_id, images))
        if rows:
            out[network] = rows
        else:
            notes.append(f"no pictures for network {network}: its runs were logged before lossbench drew them")
    return out, notes
