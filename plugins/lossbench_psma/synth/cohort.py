"""Writing cohorts: the nnU-Net raw layout with ``dataset.json`` and ``manifest.json``
(:func:`generate_cohort`), the cached default cohort (:func:`default_cohort`) and the manifest's
per-case strata (:func:`label_strata`)."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lossbench.errors import LossbenchError, ParameterError

from .case import synthesize
from .config import GENERATOR_VERSION, SynthConfig, _split_draw, case_affine, case_seed

DEFAULT_N_CASES = 64  # 51 to train and validate on (41 + 10 in fold 0), 13 held out
DEFAULT_SEED = 0
ID_PREFIX = "PSMA-SYN-"


# --------------------------------------------------------------------------------------------
# Patient-level measures (PAPER.md §6.3)


def label_strata(label: np.ndarray, pet: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The stratification measures of one case from its label, computed by the evaluator itself
    (:func:`lossbench.evaluation.case.label_biomarkers`: 18-connected count, TMTV mL, SUVmax,
    SUVmean, TLA SUV·mL, Dmax cm), rounded to 4 decimals for the manifest."""
    from lossbench.evaluation.case import label_biomarkers

    measures = label_biomarkers(label, pet, spacing, connectivity=18)
    return {"lesion_count": int(measures["lesion_count"]),
            **{k: round(float(measures[k]), 4) for k in ("tmtv_ml", "suvmax", "suvmean", "tla", "dmax_cm")}}


# --------------------------------------------------------------------------------------------
# Writing cohorts


def _nifti_gz(array: np.ndarray, affine: np.ndarray) -> bytes:
    import nibabel as nib

    img = nib.Nifti1Image(array, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    return gzip.compress(img.to_bytes(), compresslevel=1, mtime=0)


def _write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)


def _json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2) + "\n").encode()


def _n_test(n_cases: int, test_fraction: float) -> int:
    if test_fraction <= 0 or n_cases < 2:
        return 0
    return min(n_cases - 1, max(1, round(n_cases * test_fraction)))


def _validate_cohort_args(n_cases: int, seed: int, test_fraction: float) -> None:
    if int(n_cases) < 1:
        raise ParameterError(f"the cohort needs at least 1 case, got {n_cases}")
    if int(seed) < 0:
        raise ParameterError(f"the seed must be >= 0, got {seed}")
    if not 0.0 <= float(test_fraction) < 1.0:
        raise ParameterError(f"test_fraction must be in [0, 1), got {test_fraction}")


def stratified_test_indices(strata: Sequence[Mapping[str, float]], n_test: int, seed: int) -> list[int]:
    """The held-out cases: a systematic sample over the cases ordered by lesion count, then TMTV.

    Every ``n/n_test``-th case of that order (from an offset drawn from ``seed``), so the test set
    spans the lesion-count and tumour-burden strata instead of landing on the smallest-burden cases
    by chance (with 8 test cases, a random draw often did). Deterministic in ``seed``.
    """
    n = len(strata)
    if n_test <= 0:
        return []
    order = sorted(range(n), key=lambda i: (strata[i]["lesion_count"], strata[i]["tmtv_ml"], i))
    step = n / n_test
    offset = _split_draw(seed, n) * step  # one draw of the seed's split stream
    picked = sorted({order[min(n - 1, int(offset + j * step))] for j in range(n_test)})
    return picked


def _write_case(root: Path, case_id: str, index: int, seed: int, cfg: SynthConfig) -> dict[str, Any]:
    """Generate case ``index`` and write its three files under ``root``; its manifest entry.

    Depends only on its arguments (the case on ``case_seed(seed, index)``), so cases can be
    written by any number of threads in any order with the same bytes.
    """
    case = synthesize(case_id, case_seed(seed, index), cfg)
    affine = case_affine(cfg)
    files = {
        "CT": f"imagesTr/{case_id}_0000.nii.gz",
        "PET": f"imagesTr/{case_id}_0001.nii.gz",
        "label": f"labelsTr/{case_id}.nii.gz",
    }
    _write_bytes(root / files["CT"], _nifti_gz(case.ct.astype(np.int16), affine))
    _write_bytes(root / files["PET"], _nifti_gz(case.pet, affine))
    _write_bytes(root / files["label"], _nifti_gz(case.label, affine))
    return {
        "id": case_id, "index": index, "split": "train", "seed": int(seed), "seed_spawn_key": [index, 0],
        "disease": case.disease, "lesions_requested": case.lesions_requested, "files": files,
        "strata": label_strata(case.label, case.pet, cfg.spacing), "organ_suv": case.organ_suv,
        "lesions": case.lesions,
    }


def generation_workers(n_cases: int) -> int:
    """Threads that write a cohort: one per usable core (at most 8; one for fewer than 4 cases),
    or ``LOSSBENCH_SYNTH_WORKERS`` when set (1 writes on the calling thread)."""
    wanted = os.environ.get("LOSSBENCH_SYNTH_WORKERS", "").strip()
    if wanted:
        if not wanted.isdigit() or int(wanted) < 1:
            raise ParameterError(f"LOSSBENCH_SYNTH_WORKERS must be a whole number >= 1, got {wanted!r}")
        return min(int(wanted), max(1, n_cases))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 1 if n_cases < 4 else max(1, min(cores, 8, n_cases))


def _write_cases(root: Path, n_cases: int, seed: int, cfg: SynthConfig,
                 progress: Callable[[int, int, str], None] | None) -> list[dict[str, Any]]:
    """Every case's files and manifest entry, in index order, written by
    :func:`generation_workers` threads: the filters, the noise and gzip release the GIL (12 cases
    took 2.4 s on two threads against 4.3 s on one), and threads need no guarded ``__main__``
    in the caller's script, as spawned processes would. Any number of threads gives the same bytes."""
    width = max(3, len(str(n_cases - 1)))
    ids = [f"{ID_PREFIX}{i:0{width}d}" for i in range(n_cases)]
    workers = generation_workers(n_cases)
    if workers == 1:
        cases = []
        for i, case_id in enumerate(ids):
            cases.append(_write_case(root, case_id, i, seed, cfg))
            if progress is not None:
                progress(i + 1, n_cases, case_id)
        return cases
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="synth") as pool:
        jobs = [pool.submit(_write_case, root, case_id, i, seed, cfg) for i, case_id in enumerate(ids)]
        cases = []
        try:
            for i, job in enumerate(jobs):  # in index order: the progress counts finished cases
                cases.append(job.result())
                if progress is not None:
                    progress(i + 1, n_cases, ids[i])
        except BaseException:
            for job in jobs:
                job.cancel()  # the running ones finish into the temporary folder, which is removed
            raise
    return cases


def _write_cohort(root: Path, n_cases: int, seed: int, cfg: SynthConfig, test_fraction: float,
                  progress: Callable[[int, int, str], None] | None) -> dict[str, Any]:
    n_test = _n_test(n_cases, test_fraction)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir()
    cases = _write_cases(root, n_cases, seed, cfg, progress)
    # The test set is chosen once every case's strata are known; its files move to imagesTs/labelsTs.
    for i in stratified_test_indices([c["strata"] for c in cases], n_test, seed):
        case = cases[i]
        case["split"] = "test"
        for key, (old_dir, new_dir) in (("CT", ("imagesTr", "imagesTs")), ("PET", ("imagesTr", "imagesTs")),
                                        ("label", ("labelsTr", "labelsTs"))):
            moved = case["files"][key].replace(old_dir + "/", new_dir + "/", 1)
            os.replace(root / case["files"][key], root / moved)
            case["files"][key] = moved
    n_train = n_cases - n_test
    dataset = {
        "name": "PSMA-SYN",
        "description": "Synthetic PSMA PET/CT phantoms (lossbench_psma.synth), nnU-Net v2 raw layout; "
                       "CT in HU (channel 0), PET in SUVbw (channel 1), label 1 = lesion.",
        "channel_names": {"0": "CT", "1": "PET"},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": n_train,
        "numTest": n_test,
        "file_ending": ".nii.gz",
        "licence": "CC0-1.0 (synthetic)",
        "release": f"lossbench_psma.synth {GENERATOR_VERSION}",
    }
    manifest = {
        "format": "lossbench-psma-synth",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "n_cases": n_cases,
        "n_train": n_train,
        "n_test": n_test,
        "test_fraction": float(test_fraction),
        "shape": list(cfg.shape),
        "spacing_mm": list(cfg.spacing),
        "voxel_volume_ml": cfg.voxel_ml,
        "affine": case_affine(cfg).tolist(),
        "config": cfg.to_dict(),
        "cases": cases,
    }
    _write_bytes(root / "dataset.json", _json_bytes(dataset))
    _write_bytes(root / "manifest.json", _json_bytes(manifest))  # written last: marks completion
    return manifest


def _tmp_sibling(final: Path, tag: str) -> Path:
    path = final.with_name(f".{final.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}")
    os.mkdir(path)
    return path


def generate_cohort(out_dir: str | os.PathLike, n_cases: int, seed: int, config: SynthConfig | None = None, *,
                    test_fraction: float = 0.2, overwrite: bool = False,
                    progress: Callable[[int, int, str], None] | None = None) -> Path:
    """Write ``n_cases`` phantoms in the nnU-Net raw layout under ``out_dir``; returns its path.

    Layout: ``imagesTr/<ID>_0000.nii.gz`` (CT, int16 HU), ``imagesTr/<ID>_0001.nii.gz`` (PET,
    float32 SUV), ``labelsTr/<ID>.nii.gz`` (uint8), the ``imagesTs``/``labelsTs`` twins for the
    held-out cases (``round(n_cases * test_fraction)``, at least 1 when the fraction is > 0, a
    stratified sample by lesion count and TMTV: :func:`stratified_test_indices`), ``dataset.json`` (nnU-Net v2) and ``manifest.json`` (per case: id, split, seed,
    disease group, files, strata, organ SUVs, lesions). IDs are ``PSMA-SYN-000``, ...

    Everything is written into a temporary sibling folder that is renamed to ``out_dir`` at the
    end, so an interrupted run leaves nothing at ``out_dir``. A non-empty ``out_dir`` is refused
    (:class:`~lossbench.errors.LossbenchError`) unless ``overwrite``.
    """
    _validate_cohort_args(n_cases, seed, test_fraction)
    cfg = config or SynthConfig()
    out = Path(out_dir).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise LossbenchError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise LossbenchError(f"{out} is not empty; choose another folder or overwrite it (--overwrite)")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(out, "tmp")
    except OSError as exc:
        raise LossbenchError(f"cannot write next to {out}: {exc.strerror or exc}") from None
    try:
        _write_cohort(tmp, int(n_cases), int(seed), cfg, float(test_fraction), progress)
        if out.is_dir():
            if any(out.iterdir()):
                if not overwrite:  # appeared while we were generating
                    raise LossbenchError(f"{out} is not empty; choose another folder or overwrite it (--overwrite)")
                old = out.with_name(f".{out.name}.old-{os.getpid()}-{secrets.token_hex(4)}")
                os.rename(out, old)
                os.rename(tmp, out)
                shutil.rmtree(old, ignore_errors=True)
                return out
            out.rmdir()
        os.rename(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def cohort_key(config: SynthConfig, n_cases: int, seed: int, test_fraction: float) -> str:
    """A short hash of everything that determines a cohort's content (and the generator version)."""
    blob = json.dumps({"generator_version": GENERATOR_VERSION, "config": config.to_dict(), "n_cases": int(n_cases),
                       "seed": int(seed), "test_fraction": float(test_fraction)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def default_cohort(cache: str | os.PathLike | None = None, *, n_cases: int = DEFAULT_N_CASES,
                   seed: int = DEFAULT_SEED, config: SynthConfig | None = None, test_fraction: float = 0.2,
                   progress: Callable[[int, int, str], None] | None = None) -> Path:
    """The default synthetic cohort, generated on first use; returns its folder.

    It lives in ``<cache>/psma-synth-<hash>`` (``cache`` defaults to
    :func:`lossbench.paths.cache_dir`), the hash covering the config, ``n_cases``, ``seed``,
    ``test_fraction`` and :data:`GENERATOR_VERSION`. Safe when several processes ask at once: each
    generates into its own temporary folder and renames it into place; a process that finds the
    folder already there discards its own copy.
    """
    _validate_cohort_args(n_cases, seed, test_fraction)
    cfg = config or SynthConfig()
    if cache is None:
        from lossbench.paths import cache_dir

        cache = cache_dir()
    root = Path(cache).expanduser().absolute()
    final = root / f"psma-synth-{cohort_key(cfg, n_cases, seed, test_fraction)}"
    if (final / "manifest.json").is_file():
        return final
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_sibling(final, "tmp")
    except OSError as exc:
        raise LossbenchError(f"cannot create the synthetic cohort in {root}: {exc.strerror or exc}") from None
    try:
        _write_cohort(tmp, int(n_cases), int(seed), cfg, float(test_fraction), progress)
        try:
            os.rename(tmp, final)  # atomic; replaces an empty folder, fails on a non-empty one
        except OSError:
            if not (final / "manifest.json").is_file():
                raise LossbenchError(f"{final} exists but holds no complete cohort; delete it and retry") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
