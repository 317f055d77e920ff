"""``lossbench evaluate``: per-case and per-lesion tables from folders of NIfTI files."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from lossbench.cli._options import Json, StrataScheme


class EmptyDice(str, Enum):
    nan = "nan"
    one = "1"


def _fmt(value: object, digits: int = 3) -> str:
    import math

    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Folder of predicted masks <ID>.nii.gz."),
    gt: Path = typer.Option(..., "--gt", help="Folder of ground-truth masks <ID>.nii.gz; defines the cases."),
    pet: Path = typer.Option(..., "--pet", help="Folder of PET (SUV) images <ID>.nii.gz or <ID>_0001.nii.gz."),
    criterion: int = typer.Option(
        3, "--criterion", help="Detection criterion of the headline columns: 1 any overlap, 2 IoU, 3 SUVmax voxel."
    ),
    iou: float = typer.Option(0.5, "--iou", help="IoU threshold of criterion 2, in (0, 1]."),
    connectivity: int = typer.Option(18, "--connectivity", help="Connected-component connectivity: 6, 18 or 26."),
    strata: StrataScheme = typer.Option(
        StrataScheme.fixed, "--strata", help="Strata edges: a-priori 'fixed' ones or cohort tertiles ('quantile')."
    ),
    empty_dice: EmptyDice = typer.Option(
        EmptyDice.nan, "--empty-dice", help="Dice when GT and prediction are both empty: nan (as in the study) or 1."
    ),
    out: Path = typer.Option(
        Path("evaluation.csv"), "--out", help="Per-case table, .csv or .parquet."
    ),
    lesions_out: Path | None = typer.Option(
        None, "--lesions-out", help="Per-lesion table, .csv or .parquet. Default: beside --out, with a _lesions suffix."
    ),
    as_json: Json = False,
) -> None:
    """Evaluate predictions against ground truth: Dice, lesion detection, FP/FN volumes, biomarkers, strata."""
    from lossbench import api
    from lossbench.cli._common import err_console, json_mode, print_json

    with json_mode(as_json) as stdout:
        status = err_console()
        with status.status("evaluating") as spinner:
            result = api.evaluate(
                pred=pred, gt=gt, pet=pet, criterion=criterion, iou=iou, connectivity=connectivity,
                strata=strata.value, empty_dice=empty_dice.value, out=out, lesions_out=lesions_out,
                progress=lambda case_id: spinner.update(f"evaluating {case_id}"),
            )
        extra = result.unmatched
        if extra:
            shown = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
            err_console().print(
                f"warning: {len(extra)} prediction(s) without ground truth not evaluated: {shown}",
                markup=False, highlight=False, soft_wrap=True,
            )
        if as_json:
            print_json(result.as_dict(), stdout)
            return
        _print(result, criterion)


def _print(result, criterion: int) -> None:
    from rich.table import Table

    from lossbench.cli._common import console

    cases, summary, out, lesions_path = result.cases, result.summary, result.out, result.lesions_out
    table = Table(title=f"per case (detection criterion {criterion})", title_justify="left")
    for col in ("case", "Dice", "TP", "FP", "FN", "sensitivity", "FPV mL", "FNV mL", "GT lesions"):
        table.add_column(col, justify="left" if col == "case" else "right")
    for row in cases.itertuples(index=False):
        table.add_row(
            str(row.case_id), _fmt(row.dice), str(row.tp), str(row.fp), str(row.fn),
            _fmt(row.sensitivity), _fmt(row.fp_volume_ml, 2), _fmt(row.fn_volume_ml, 2), str(row.gt_lesion_count),
        )
    table.add_section()
    table.add_row(
        "pooled", "", _fmt(int(summary.at["tp", "pooled"])), _fmt(int(summary.at["fp", "pooled"])),
        _fmt(int(summary.at["fn", "pooled"])), _fmt(summary.at["sensitivity", "pooled"]),
        _fmt(summary.at["fp_volume_ml", "pooled"], 2), _fmt(summary.at["fn_volume_ml", "pooled"], 2),
        str(int(cases["gt_lesion_count"].sum())), style="bold",
    )
    out_console = console()
    out_console.print(table)

    stats = Table(title="summary", title_justify="left")
    for col in ("metric", "pooled", "mean", "sd", "median", "IQR", "n"):
        stats.add_column(col, justify="left" if col == "metric" else "right")
    for metric in ("dice", "sensitivity", "precision", "f1", "fp_volume_ml", "fn_volume_ml"):
        s = summary.loc[metric]
        stats.add_row(
            metric, _fmt(s["pooled"]), _fmt(s["mean"]), _fmt(s["sd"]), _fmt(s["median"]),
            f"{_fmt(s['q1'])}–{_fmt(s['q3'])}", str(int(s["n"])),
        )
    out_console.print(stats)
    out_console.print(f"per-case table: {out}\nper-lesion table: {lesions_path}", markup=False, highlight=False)
