"""``lossbench data synth`` (added by this plugin's ``register_commands``): write a synthetic
PSMA PET/CT cohort in the nnU-Net raw layout."""

from __future__ import annotations

from pathlib import Path

import typer

from lossbench.cli._common import console
from lossbench.components import parse_numbers


def synth(
    out: Path = typer.Option(..., "--out", help="Folder to create (nnU-Net raw layout); must not exist or be empty."),
    cases: int = typer.Option(64, "--cases", min=1, help="Number of cases (the default cohort's 64)."),
    seed: int = typer.Option(0, "--seed", min=0, help="Cohort seed; case i depends only on (seed, i)."),
    shape: str | None = typer.Option(None, "--shape", help="Grid X,Y,Z in voxels [default: 112,80,128 at 4 mm: upper thighs to lung bases; "
                                         "112,80,224 reaches the orbits (salivary and lacrimal glands)]."),
    spacing: str | None = typer.Option(
        None, "--spacing", help="Voxel size in mm, one value or X,Y,Z; alone it keeps the default field of view."
    ),
    test_fraction: float = typer.Option(0.2, "--test-fraction", min=0.0, max=0.95,
                                        help="Share of cases held out in imagesTs/labelsTs."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
) -> None:
    """Generate a deterministic synthetic PSMA PET/CT cohort (CT, PET in SUV, lesion labels, manifest)."""
    import time

    import numpy as np
    from rich.progress import Progress
    from rich.table import Table

    from lossbench_psma import synth as gen

    shape_t = parse_numbers(shape, int, what="--shape", count=(3,)) if shape else None
    spacing_t = parse_numbers(spacing, float, what="--spacing") if spacing else None
    config = gen.config_for(shape=shape_t, spacing=spacing_t)

    out_console = console()
    start = time.perf_counter()
    with Progress(console=out_console, transient=True) as progress:
        task = progress.add_task("generating", total=cases)
        path = gen.generate_cohort(
            out, cases, seed, config, test_fraction=test_fraction, overwrite=overwrite,
            progress=lambda done, total, case_id: progress.update(task, completed=done, description=case_id),
        )
    elapsed = time.perf_counter() - start

    import json

    manifest = json.loads((path / "manifest.json").read_text())
    strata = manifest["cases"]

    def span(key: str, fmt: str) -> str:
        values = np.array([c["strata"][key] for c in strata], float)
        lo, med, hi = values.min(), float(np.median(values)), values.max()
        return f"{lo:{fmt}} / {med:{fmt}} / {hi:{fmt}}"

    n_lesions = sum(len(c["lesions"]) for c in strata)
    table = Table(title="synthetic PSMA PET/CT cohort", title_justify="left", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("cases", f"{manifest['n_cases']} ({manifest['n_train']} train, {manifest['n_test']} test), "
                           f"seed {manifest['seed']}")
    table.add_row("grid", f"{'x'.join(map(str, config.shape))} voxels of "
                          f"{'x'.join(f'{s:g}' for s in config.spacing)} mm")
    table.add_row("lesions", f"{n_lesions} in total")
    table.add_row("lesions per case (min / median / max)", span("lesion_count", ".0f"))
    table.add_row("TMTV mL", span("tmtv_ml", ".2f"))
    table.add_row("SUVmax", span("suvmax", ".1f"))
    table.add_row("Dmax cm", span("dmax_cm", ".1f"))
    table.add_row("time", f"{elapsed:.1f} s")
    table.add_row("folder", str(path))
    out_console.print(table)


def dicom(
    src: Path = typer.Option(..., "--in", help="Folder of DICOM files (any layout, any order): CT and PET series."),
    out: Path = typer.Option(..., "--out", help="Folder to create (nnU-Net raw layout); must not exist or be empty."),
    id_from: str = typer.Option("PatientID", "--id-from", help="Case id from PatientID or StudyInstanceUID."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a non-empty --out folder."),
    seg: Path = typer.Option(None, "--seg", help="Folder of RTSTRUCT and/or DICOM SEG files (may be the --in "
                             "folder): labelsTr/<ID>.nii.gz from each study's structure set drawn on its PET "
                             "series, or its SEG (read with highdicom) referencing its PET or CT series, matched "
                             "by UIDs; a SEG is mapped nearest-neighbour onto the PET grid, a FRACTIONAL one "
                             "keeps voxels of fraction >= 0.5. A study with both an RTSTRUCT and a SEG is "
                             "refused: keep one."),
    roi: str = typer.Option("lesion", "--roi", help="With --seg: include every RTSTRUCT ROI (ROIName) or SEG "
                            "segment (SegmentLabel) whose name contains this, in any case (default: lesion)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Convert DICOM PET/CT studies to imagesTr/<ID>_0000.nii.gz (CT on the PET grid, HU) and
    <ID>_0001.nii.gz (PET in SUV body weight), with a manifest of weight, dose, times and decay;
    with --seg also labelsTr/<ID>.nii.gz from RTSTRUCT contours or DICOM SEG segments (chosen by --roi)."""
    import json

    from lossbench.cli._common import err_console
    from lossbench_psma.dicom import convert

    with err_console().status("reading DICOM…") as spinner:
        manifest = convert(src, out, id_from=id_from, overwrite=overwrite, seg=seg, roi=roi,
                           progress=lambda case: spinner.update(f"converting {case}"))
    if as_json:
        typer.echo(json.dumps(manifest, indent=2))
        return
    out_console = console()
    for s in manifest["studies"]:
        decay = s.get("decay_factor")
        out_console.print(f"{s['id']}: PET {'x'.join(map(str, s['pet_shape']))}, SUVmax {s['suv_max']:.2f}"
                          + (f", decay factor {decay:.4f} ({s['decay_correction']})" if decay is not None else ""),
                          highlight=False)
    out_console.print(f"{len(manifest['studies'])} studies -> {out} (manifest.json)", highlight=False)
