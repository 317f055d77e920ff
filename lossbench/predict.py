"""Apply trained cells to new cases: ``lossbench predict`` and :func:`lossbench.predict`.

Everything comes from the tracking store (through :mod:`lossbench.tracking`): the weights from the
run's ``best_model.pt`` (read with ``torch.load(weights_only=True)``: a crafted file cannot run code)
and the preprocessing from its ``config.json`` (dataset and its parameters, spacing, patch, sliding
window). Each case is preprocessed exactly as the run's test cases were (the dataset plugin's
``infer`` transforms), predicted with a sliding window, and mapped back onto the input PET's grid
(MONAI ``Invertd`` on the logits, as the engine does); masks are written with the PET's header.

Several runs (``--fold all``: one per fold) form an ensemble: ``vote`` keeps a voxel when more than
half of the models mark it (the reference's 5-fold ensemble: at least 3 of 5), ``mean`` averages the
lesion probabilities (softmax) and keeps those above 0.5.

Input: a folder of nnU-Net-style cases ``<ID>_0000.nii.gz`` (CT, HU) and ``<ID>_0001.nii.gz`` (PET,
SUV), directly or in ``imagesTs/`` / ``imagesTr/``. With ``labels`` (a folder of ``<ID>.nii.gz``) each
case is evaluated with the same evaluator as ``lossbench run`` (:func:`lossbench.evaluation.evaluate_case`).
The output folder appears only when complete. The module is callable: ``lossbench.predict(...)`` is
:func:`lossbench.api.predict`, which calls :func:`predict` here.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lossbench._callable import make_callable
from lossbench.errors import LossbenchError

__all__ = ["ENSEMBLES", "PredictResult", "find_inputs", "predict", "select_runs"]

ENSEMBLES = ("vote", "mean")
CT_SUFFIX, PET_SUFFIX = "_0000", "_0001"


@dataclasses.dataclass
class PredictResult:
    out: Path
    run_ids: list[str]
    cases: list[str]
    ensemble: str
    #: Per-case evaluation table (when labels were given), else None.
    evaluation: Any = None
    summary: Any = None


def _strip(name: str) -> str | None:
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def find_inputs(folder: Path) -> dict[str, tuple[Path, Path]]:
    """``{case id: (CT, PET)}`` of a folder of ``<ID>_0000`` / ``<ID>_0001`` NIfTI files (or its
    ``imagesTs/`` and ``imagesTr/``); a case missing one of them is an error naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LossbenchError(f"input folder {folder} does not exist")
    places = [folder] + [folder / sub for sub in ("imagesTs", "imagesTr") if (folder / sub).is_dir()]
    found: dict[str, dict[str, Path]] = {}
    for place in places:
        for path in sorted(place.iterdir()):
            stem = _strip(path.name)
            if stem is None or not stem.endswith((CT_SUFFIX, PET_SUFFIX)):
                continue
            case, channel = stem[:-5], stem[-5:]
            found.setdefault(case, {})[channel] = path
    if not found:
        raise LossbenchError(f"{folder} holds no cases: expected <ID>_0000.nii.gz (CT) and <ID>_0001.nii.gz "
                             "(PET, SUV), directly or in imagesTs/ or imagesTr/")
    bad = sorted(c for c, files in found.items() if set(files) != {CT_SUFFIX, PET_SUFFIX})
    if bad:
        raise LossbenchError(f"case {bad[0]} in {folder} lacks its "
                             f"{'CT (_0000)' if CT_SUFFIX not in found[bad[0]] else 'PET (_0001)'} file"
                             + (f" ({len(bad) - 1} more cases incomplete)" if len(bad) > 1 else ""))
    return {c: (files[CT_SUFFIX], files[PET_SUFFIX]) for c, files in sorted(found.items())}


def select_runs(tracker: Any, *, run: str | None = None, loss: str | None = None, net: str | None = None,
                fold: str | None = None, seed: int | None = None) -> list[Any]:
    """The finished cell runs to apply: ``run`` itself, or the newest finished run of loss × net for
    one fold (``fold`` a number) or for every fold (``fold="all"``: the ensemble), of ``seed``."""
    if run:
        if loss or net or fold is not None:
            raise LossbenchError("give either --run or --loss/--net/--fold, not both")
        record = tracker.run(run)
        if record.tags.get("lossbench.kind") != "cell":
            raise LossbenchError(f"run {run} is not a lossbench cell run (tag lossbench.kind = cell)")
        if not record.finished:
            raise LossbenchError(f"run {run} is {record.status}, not FINISHED: it has no tested model to apply")
        return [record]
    if not loss or not net:
        raise LossbenchError("say which model: --run RUN_ID, or --loss and --net (with --fold N or --fold all)")
    fold = "all" if fold is None else str(fold)
    if fold != "all" and not fold.isdigit():
        raise LossbenchError(f"--fold must be a fold number or 'all', got {fold!r}")
    tags = {"lossbench.loss": loss, "lossbench.network": net, "lossbench.seed": str(0 if seed is None else seed)}
    if fold != "all":
        tags["lossbench.fold"] = fold
    newest: dict[str, Any] = {}
    for record in tracker.runs_of(kind="cell", tags=tags):  # newest first
        if record.finished:
            newest.setdefault(record.tags.get("lossbench.fold", "?"), record)
    if not newest:
        raise LossbenchError(f"no finished cell run of loss {loss} × network {net}, fold {fold}, seed "
                             f"{tags['lossbench.seed']} in experiment {tracker.experiment!r}")
    runs = [newest[k] for k in sorted(newest, key=lambda f: (len(f), f))]
    splits = {r.params.get("split.sha256") for r in runs}
    if len(splits) > 1:
        raise LossbenchError(f"the runs of the ensemble ({', '.join(r.id for r in runs)}) were trained on different "
                             "splits; choose one with --run")
    return runs


@dataclasses.dataclass
class _Model:
    run_id: str
    net: Any
    config: dict[str, Any]
    dataset: Any
    transforms: Any
    precision: str = "float32"


def inference_precision(record_params: dict[str, Any], config: dict[str, Any], device: Any) -> str:
    """The precision a run's own test inference used, on ``device``: the run's logged ``precision``
    (older runs: resolved from its config as the engine did), float32 where the device cannot
    (float16 on a CPU). Predicting in the run's precision gives the run's own test masks."""
    from lossbench.engine import resolve_precision

    logged = record_params.get("precision")
    if logged in ("float32", "float16", "bfloat16"):
        return resolve_precision(logged != "float32", logged, device)
    return resolve_precision(config.get("amp", False), str(config.get("amp_dtype", "float16")), device)


def _load_model(tracker: Any, registry: Any, record: Any, device: Any, input_dir: Path) -> _Model:
    import torch

    config = json.loads(tracker.read_text(record.id, "config.json"))
    with tempfile.TemporaryDirectory(prefix="lossbench-model-") as tmp:
        path = tracker.download(record.id, "best_model.pt", tmp)
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a torn, foreign or crafted file: run nothing from it
            raise LossbenchError(f"best_model.pt of run {record.id} cannot be read safely "
                                 f"({type(exc).__name__})") from None
    params = dict(config.get("dataset_params") or {})
    params["data"] = str(input_dir)  # only the preprocessing is used: no case of the training data is read
    dataset = registry.build("dataset", config["dataset"], params)
    net = registry.build("network", weights["network"], dict(weights.get("network_params") or {}),
                         in_channels=int(weights["in_channels"]), out_channels=int(weights["out_channels"]),
                         spatial_dims=3)
    net.load_state_dict(weights["model"])
    net.to(device).eval()
    transforms = dataset.transforms("infer", spacing=tuple(config["spacing"]))
    return _Model(record.id, net, config, dataset, transforms,
                  inference_precision(dict(record.params), config, device))


def _probabilities(model: _Model, ct: Path, pet: Path, device: Any) -> Any:
    """Lesion probability on the PET's grid (x, y, z), float32; 0 outside the body crop."""
    import numpy as np
    import torch
    from monai.data import MetaTensor
    from monai.inferers import sliding_window_inference
    from monai.transforms import Invertd

    from lossbench.datasets import CT_KEY, PET_KEY
    from lossbench.engine import autocast

    ds = model.dataset
    item = model.transforms({CT_KEY: str(ct), PET_KEY: str(pet), "id": pet.name, "patient": pet.name})
    image = item[ds.image_key]
    c = model.config
    with torch.no_grad(), autocast(model.precision, device):
        logits = sliding_window_inference(
            image[None].to(device), roi_size=tuple(c["patch"]), sw_batch_size=int(c.get("sw_batch_size", 4)),
            predictor=model.net, overlap=float(c.get("overlap", 0.25)), mode="constant",
        )[0].float().cpu()
    inverter = Invertd(keys="pred", transform=model.transforms, orig_keys=PET_KEY, nearest_interp=False,
                       to_tensor=True)
    out = torch.as_tensor(inverter({"pred": MetaTensor(logits), PET_KEY: image})["pred"])
    inside = out.abs().sum(0) > 0  # outside the foreground crop every logit is 0
    prob = torch.softmax(out, dim=0)[1] * inside
    return np.asarray(prob.numpy(), dtype=np.float32)


def predict(
    input_dir: Path | str,
    out: Path | str,
    *,
    run: str | None = None,
    experiment: str | None = None,
    tracking_uri: str | None = None,
    loss: str | None = None,
    net: str | None = None,
    fold: str | int | None = None,
    seed: int | None = None,
    ensemble: str = "vote",
    probabilities: bool = False,
    labels: Path | str | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
) -> PredictResult:
    """Apply a finished cell run (``run``), or the fold ensemble of ``loss`` × ``net``, to every case of
    ``input_dir``; write ``out/<ID>.nii.gz`` (uint8 mask on the PET's grid, the PET's header), with
    ``probabilities`` also ``out/<ID>_probability.nii.gz`` (float32), and with ``labels`` the tables
    ``out/evaluation/{cases,lesions,summary}.csv``. Same checks and errors as ``lossbench predict``."""
    import nibabel as nib
    import numpy as np
    import pandas as pd

    from lossbench.engine import resolve_device
    from lossbench.evaluation import evaluate_case, stratify, summarize
    from lossbench.evaluation.io import read_image
    from lossbench.fsio import atomic_folder
    from lossbench.plugin_manager import create_plugin_manager
    from lossbench.registry import Registry
    from lossbench.tracking import Tracker

    if ensemble not in ENSEMBLES:
        raise LossbenchError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {ensemble!r}")
    input_dir, out = Path(input_dir), Path(out)
    inputs = find_inputs(input_dir)
    label_files: dict[str, Path] = {}
    if labels is not None:
        labels = Path(labels)
        if not labels.is_dir():
            raise LossbenchError(f"labels folder {labels} does not exist")
        for case in inputs:
            found = [p for p in (labels / f"{case}.nii.gz", labels / f"{case}.nii") if p.exists()]
            if not found:
                raise LossbenchError(f"case {case}: no label {labels / (case + '.nii.gz')}")
            label_files[case] = found[0]

    def check(folder: Path) -> None:
        if folder.exists() and any(folder.iterdir()) and not overwrite:
            raise LossbenchError(f"output folder {folder} is not empty; choose another -o or pass --overwrite")
        if folder.resolve() == input_dir.resolve():
            raise LossbenchError("the output folder must not be the input folder")

    check(out)
    torch_device = resolve_device(device)
    tracker = Tracker(tracking_uri, experiment, create=False)
    records = select_runs(tracker, run=run, loss=loss, net=net, fold=None if fold is None else str(fold), seed=seed)
    registry = Registry(create_plugin_manager())
    models = [_load_model(tracker, registry, r, torch_device, input_dir) for r in records]

    case_rows, lesion_rows = [], []
    with atomic_folder(out, check=check) as tmp:
        for case, (ct, pet_path) in inputs.items():
            if progress is not None:
                progress(case)
            probs = [_probabilities(m, ct, pet_path, torch_device) for m in models]
            if ensemble == "vote":
                mask = (np.sum([p > 0.5 for p in probs], axis=0) * 2 > len(probs))
            else:
                mask = np.mean(probs, axis=0) > 0.5
            pet_img = nib.load(str(pet_path))
            if mask.shape != tuple(pet_img.shape[:3]):
                raise LossbenchError(f"case {case}: prediction shape {mask.shape} does not match the PET "
                                     f"{tuple(pet_img.shape[:3])}")
            header = pet_img.header.copy()
            header.set_data_dtype(np.uint8)
            header["scl_slope"], header["scl_inter"] = 1.0, 0.0
            nib.save(nib.Nifti1Image(mask.astype(np.uint8), pet_img.affine, header), str(tmp / f"{case}.nii.gz"))
            if probabilities:
                header = pet_img.header.copy()
                header.set_data_dtype(np.float32)
                header["scl_slope"], header["scl_inter"] = 1.0, 0.0
                nib.save(nib.Nifti1Image(np.mean(probs, axis=0).astype(np.float32), pet_img.affine, header),
                         str(tmp / f"{case}_probability.nii.gz"))
            if case in label_files:
                from lossbench.engine import label_on_pet_grid

                pet = read_image(pet_path, kind="pet")
                gt = label_on_pet_grid(read_image(label_files[case]), pet)
                result = evaluate_case(mask.astype(np.uint8), gt, pet.array, pet.spacing, case_id=case)
                case_rows.append(result.case)
                lesion_rows.extend(result.lesions)
        (tmp / "prediction.json").write_text(json.dumps({
            "runs": [m.run_id for m in models], "ensemble": ensemble if len(models) > 1 else "single model",
            "experiment": tracker.experiment, "tracking_uri": tracker.shown_uri, "input": str(input_dir.resolve()),
            "cases": list(inputs),
        }, indent=2))
        evaluation = summary = None
        if case_rows:
            evaluation = stratify(pd.DataFrame(case_rows))
            summary = summarize(evaluation)
            (tmp / "evaluation").mkdir()
            evaluation.to_csv(tmp / "evaluation" / "cases.csv", index=False)
            pd.DataFrame(lesion_rows).to_csv(tmp / "evaluation" / "lesions.csv", index=False)
            summary.to_csv(tmp / "evaluation" / "summary.csv")
    return PredictResult(out=out, run_ids=[m.run_id for m in models], cases=list(inputs),
                         ensemble=ensemble if len(models) > 1 else "single model", evaluation=evaluation,
                         summary=summary)


make_callable(__name__, "predict")
