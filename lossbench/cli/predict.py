"""``lossbench predict``: apply a trained cell (or its fold ensemble) to new cases."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli import _options as opts


def predict(
    input_dir: Path = typer.Option(..., "--input", "-i", help="Folder of <ID>_0000.nii.gz (CT, HU) and "
                                   "<ID>_0001.nii.gz (PET, SUV), directly or in imagesTs/ or imagesTr/."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write <ID>.nii.gz masks into (appears when "
                             "complete; must not exist or be empty)."),
    run: str = typer.Option(None, "--run", help="MLflow run id of a finished cell."),
    loss: str = typer.Option(None, "--loss", help="With --net: the newest finished cell of this loss."),
    net: str = typer.Option(None, "--net", help="With --loss: the network of the cell."),
    fold: str = typer.Option(None, "--fold", help="A fold number, or 'all' for the fold ensemble (default: all)."),
    seed: int = typer.Option(None, "--seed", help="Seed of the cells (default: 0)."),
    ensemble: str = typer.Option("vote", "--ensemble", help="How folds combine: vote (more than half of the "
                                 "models, the reference's 3 of 5) or mean (mean lesion probability > 0.5)."),
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <ID>_probability.nii.gz "
                                       "(mean lesion probability, float32)."),
    labels: Path = typer.Option(None, "--labels", help="Folder of <ID>.nii.gz ground truth: evaluate the "
                                "predictions as lossbench run does (evaluation/cases.csv, lesions.csv, summary.csv)."),
    device: opts.Device = "auto",
    experiment: opts.Experiment = "lossbench",
    tracking_uri: opts.TrackingUri = None,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON (for scripts)."),
) -> None:
    """Apply a trained model from MLflow to new PET/CT cases: masks on each PET's grid, optionally evaluated.

    The weights (best_model.pt) and the preprocessing (config.json: dataset parameters, spacing,
    patch, sliding window) come from the run; nothing else is needed.
    """
    import json

    from lossbench.cli._common import console, err_console
    from lossbench.predict import predict as run_predict

    status = err_console()
    with status.status("loading the model…") as spinner:
        result = run_predict(
            input_dir, out, run=run, experiment=experiment, tracking_uri=tracking_uri, loss=loss, net=net,
            fold=fold, seed=seed, ensemble=ensemble, probabilities=probabilities, labels=labels, device=device,
            overwrite=overwrite, progress=lambda case: spinner.update(f"predicting {case}"),
        )
    summary = None
    if result.summary is not None:
        s = result.summary
        summary = {f"{m}_{stat}": float(s.at[m, stat]) for m in ("dice", "f1", "sensitivity", "tp", "fp", "fn")
                   for stat in ("mean", "pooled") if m in s.index and stat in s.columns}
    if as_json:
        typer.echo(json.dumps({"out": str(result.out.resolve()), "runs": result.run_ids, "ensemble": result.ensemble,
                               "cases": result.cases, "evaluation": summary}, indent=2))
        return
    out_console = console()
    out_console.print(f"{len(result.cases)} case(s) predicted with {len(result.run_ids)} model(s) "
                      f"({result.ensemble}: {', '.join(result.run_ids)})", highlight=False)
    if summary is not None:
        out_console.print(f"test Dice mean {summary.get('dice_mean', float('nan')):.4f}, pooled F1 "
                          f"{summary.get('f1_pooled', float('nan')):.4f}; tables in {result.out / 'evaluation'}",
                          highlight=False)
    out_console.print(f"masks: {result.out.resolve()}", highlight=False)
