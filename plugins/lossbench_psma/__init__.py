"""lossbench-psma: the PSMA PET/CT dataset plugin (nnU-Net-layout loader and the synthetic phantom cohort)."""

from __future__ import annotations

import lossbench
from lossbench import Component, Param

PSMA = Component(
    kind="dataset",
    name="psma",
    summary="PSMA PET/CT lesion segmentation (CT + PET SUV -> binary lesion mask); synthetic cohort by default.",
    factory="lossbench_psma.dataset:build_psma",
    validator="lossbench_psma.dataset:check_psma",
    # The cpu preset: every tissue at the same CT value in every case, PET in units of 5 SUV
    # (benchmarks/RESULTS.md, "The default demo"); the paper preset keeps the reference's min-max and SUV.
    presets={"cpu": {"ct_window": "-1000,1000", "pet_scale": 5.0}},
    params=(
        Param("data", str, "", "Data folder (nnU-Net raw or autoPET layout); empty = the synthetic default cohort."),
        Param("layout", str, "auto", "Folder layout; auto detects imagesTr/ (nnunet) or */CTres.nii.gz (autopet).",
              choices=("auto", "nnunet", "autopet")),
        Param("n_folds", int, 5, "Cross-validation folds over the training pool."),
        Param("split_scheme", str, "contiguous",
              "contiguous: sorted patient ids cut into blocks (the reference); shuffled: seeded order.",
              choices=("contiguous", "shuffled")),
        Param("split_seed", int, 0, "Seed of the shuffled split scheme."),
        Param("test_fraction", float, 0.2,
              "Fraction of patients held out for testing when the data has no test set (autoPET, no imagesTs)."),
        Param("test_seed", int, 0, "Seed of that held-out selection."),
        Param("label_geometry", str, "strict",
              "strict: a label off the PET grid is an error; resample: resample it nearest-neighbour at load time.",
              choices=("strict", "resample")),
        Param("ct_window", str, "minmax",
              "CT scaling to [0, 1]: minmax over the body crop (the reference), or a fixed HU window LOW,HIGH "
              "(clipped), which puts each tissue at the same value in every case."),
        Param("pet_scale", float, 1.0, "PET channel = SUV / pet_scale (1: SUV as is, the reference)."),
        Param("negative_suv_tolerance", float, 0.0,
              "Most negative SUV accepted, as a positive number (e.g. 0.01: reconstructed PET has small "
              "negatives); such voxels are reported per cohort and used as they are. 0: any negative SUV is an error."),
    ),
    description=(
        "Two input channels, CT (channel 0, min-max scaled to [0, 1] over the body crop) and PET in SUV "
        "(channel 1, not normalised); the label is binary (1 = lesion). Preprocessing as the reference code "
        "(PAPER.md §4.4): crop to CT > 0, RAS, 2 mm, 4:1 lesion-centred patches, random affine.\n"
        "\n"
        "With data empty, a deterministic 64-case synthetic phantom cohort is generated once into "
        "$LOSSBENCH_HOME/cache. To use real data set data=PATH to a folder in either layout:\n"
        "  nnU-Net raw: imagesTr/<ID>_0000.nii.gz (CT, HU), imagesTr/<ID>_0001.nii.gz (PET, SUV), "
        "labelsTr/<ID>.nii.gz (0/1), and optionally imagesTs/ + labelsTs/ for the held-out test set "
        "(without imagesTs a test_fraction of the patients is held out).\n"
        "  autoPET: <patient>/<study>/CTres.nii.gz, SUV.nii.gz, SEG.nii.gz (or <study>/... one level deep); "
        "studies of one patient stay together in every split; a test_fraction of the patients is held out.\n"
        "The label must lie on the PET grid (same shape and affine); a CT on another grid is resampled onto "
        "the PET grid at load time (linear, padding -1024 HU). Nothing is written into the data folder. "
        "Every case is checked before training: missing modality or label, non-binary label, label/PET "
        "geometry, NaN or negative SUV (beyond negative_suv_tolerance), empty or corrupt files; an image may be 3-D "
        "or (x, y, z, 1)."
    ),
    citation=(
        "Dzikunu et al., Adaptive voxel-weighted loss using L1 norms in deep neural networks for detection and "
        "segmentation of prostate cancer lesions in PET/CT images, arXiv:2502.02756 (2025). autoPET layout: "
        "Gatidis et al., A whole-body FDG-PET/CT dataset with manually annotated tumor lesions, Sci Data 9, 601 (2022)."
    ),
)


@lossbench.hookimpl
def register_datasets(register):
    register(PSMA)


@lossbench.hookimpl
def register_commands(cli):
    from lossbench_psma.commands import dicom, synth

    cli.group("data").command("synth")(synth)
    cli.group("data").command("dicom")(dicom)
