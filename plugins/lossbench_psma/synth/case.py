"""One case: the anatomy, the disease drawn and placed, the PET blur and noise, and the lesion
records (:func:`synthesize`, :func:`generate_case`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from lossbench.errors import ParameterError

from .anatomy import (AIR, AIRWAY, AORTA, BLADDER, BOWEL, BRAIN, CORT, FAT, HEART, KIDNEY, LACRIMAL, LIVER, LUNG,
                      PAROTID, SOFT, SPLEEN, SUBMAND, TISSUES, TRAB, _cortical_rim, _Grid, _paint_body, _paint_bowel,
                      _paint_organs, _paint_skeleton, _Painter, _Patient, _texture)
from .config import SynthConfig
from .lesions import _lesion_count, _LesionPainter, _pick


@dataclass
class SynthCase:
    """One generated case: images, label, lesion list and what was drawn for it."""

    case_id: str
    ct: np.ndarray          # float32 HU (integer-valued), (x, y, z)
    pet: np.ndarray         # float32 SUV
    label: np.ndarray       # uint8 {0, 1}
    lesions: list[dict[str, Any]]
    tissue: np.ndarray      # uint8 codes into TISSUES
    disease: str
    lesions_requested: int  # drawn count; a lesion that finds no room after 32 tries is dropped
    organ_suv: dict[str, float]
    config: SynthConfig = field(repr=False)


# --------------------------------------------------------------------------------------------
# The case


def _as_rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (np.random.SeedSequence, int, np.integer)):
        return np.random.default_rng(rng_or_seed)
    raise ParameterError(f"rng_or_seed must be an int, a SeedSequence or a Generator, got {type(rng_or_seed).__name__}")


def _draw_suv(rng, mean, sd, floor=0.3):
    return float(max(mean + sd * rng.standard_normal(), floor * mean))


def synthesize(case_id: str, rng_or_seed, config: SynthConfig | None = None) -> SynthCase:
    """Generate one case with everything that was drawn for it (see :func:`generate_case`)."""
    cfg = config or SynthConfig()
    # Independent streams, so that the disease (count, sites, volumes, SUVs) does not depend on
    # the grid, and the anatomy not on the disease.
    rng_anatomy, rng_texture, rng_disease, rng_place, rng_noise = _as_rng(rng_or_seed).spawn(5)
    rng = rng_anatomy
    grid = _Grid(cfg)
    pa = _Patient(rng, grid)
    organ_suv = {name: _draw_suv(rng, m, s) for name, m, s in cfg.organ_suv}
    hu = {
        LUNG: rng.normal(-850, 25), FAT: rng.normal(-100, 10), SOFT: rng.normal(40, 6), LIVER: rng.normal(58, 6),
        SPLEEN: rng.normal(48, 5), KIDNEY: rng.normal(32, 5), BLADDER: rng.normal(8, 4), BOWEL: rng.normal(20, 8),
        HEART: rng.normal(40, 5), AORTA: rng.normal(42, 5), AIRWAY: -980.0, BRAIN: rng.normal(35, 3),
        PAROTID: rng.normal(15, 10), SUBMAND: rng.normal(45, 5), LACRIMAL: rng.normal(45, 5),
        TRAB: rng.uniform(200, 400), CORT: rng.uniform(750, 1200), AIR: -1000.0,
    }
    tex = _texture(rng_texture, grid)

    painter = _Painter(grid)
    _paint_body(painter, pa, tex)
    bowel = _paint_bowel(painter, pa, rng, organ_suv["bowel"])
    _paint_organs(painter, pa, rng)
    _paint_skeleton(painter, pa)
    _cortical_rim(painter)
    tissue = painter.tissue

    hu_lut = np.array([hu[i] for i in range(len(TISSUES))], np.float32)
    suv_of = {
        AIR: 0.0, LUNG: organ_suv["lung"], FAT: organ_suv["fat"], SOFT: organ_suv["soft tissue"],
        LIVER: organ_suv["liver"], SPLEEN: organ_suv["spleen"], KIDNEY: organ_suv["kidney"],
        BLADDER: organ_suv["bladder"], BOWEL: organ_suv["bowel"], HEART: organ_suv["blood"],
        AORTA: organ_suv["blood"], AIRWAY: 0.0, BRAIN: organ_suv["brain"], PAROTID: organ_suv["parotid"],
        SUBMAND: organ_suv["submandibular"], LACRIMAL: organ_suv["lacrimal"], TRAB: organ_suv["marrow"],
        CORT: 0.5 * organ_suv["marrow"],
    }
    suv_lut = np.array([suv_of[i] for i in range(len(TISSUES))], np.float32)
    tex_hu = np.array([0, 30, 10, 8, 5, 5, 5, 2, 12, 4, 3, 0, 3, 10, 5, 5, 40, 60], np.float32)
    ct = hu_lut[tissue] + tex_hu[tissue] * tex[0]
    act = suv_lut[tissue] * np.exp(np.float32(0.12) * tex[0] * (tissue != BLADDER))
    if bowel is not None:
        sl, mask, values = bowel
        keep = mask & (tissue[sl] == BOWEL)
        act[sl][keep] = values[keep]
    del tex

    # lesions: draw the disease first, then place it
    rng = rng_disease
    group, n_lesions = _lesion_count(rng, cfg)
    weights = cfg.site_weights_few if n_lesions <= cfg.few_max_count else cfg.site_weights_many
    vol_offset = rng.normal(0.0, cfg.patient_volume_sigma)
    suv_offset = rng.normal(0.0, cfg.patient_suvmax_sigma)
    plan = []
    for _ in range(n_lesions):
        site = _pick(rng, weights)
        if site == "prostate bed" and any(p[0] == site for p in plan):
            site = "pelvic node"  # one local recurrence at most
        region = _pick(rng, cfg.bone_region_weights) if site == "bone" else site.replace(" node", "")
        median = cfg.volume_median_ml * dict(cfg.site_volume_factor).get(site, 1.0)
        vol = float(np.clip(median * math.exp(vol_offset + cfg.volume_sigma * rng.standard_normal()),
                            *cfg.volume_range_ml))
        suvmax = float(np.clip(cfg.suvmax_median * math.exp(suv_offset + cfg.suvmax_sigma * rng.standard_normal()),
                               *cfg.suvmax_range))
        plan.append((site, region, vol, suvmax))
    lp = _LesionPainter(cfg, grid, pa, tissue, painter.region, ct, act)
    for site, region, vol, suvmax in plan:
        lp.place(rng_place, site, region, vol, suvmax)
    fallback = 0
    while not lp.placed:  # every case has a lesion
        fallback += 1
        if fallback > 50:
            raise RuntimeError(f"{case_id}: could not place any lesion")
        lp.place(rng_place, "pelvic node", "pelvic", cfg.volume_range_ml[0] * 3, cfg.suvmax_median)

    # PET: partial-volume blur and Poisson-like, spatially correlated noise
    sp = grid.spacing
    if cfg.pet_fwhm_mm > 0:
        act = ndimage.gaussian_filter(act, cfg.pet_fwhm_mm / 2.3548 / sp, truncate=3.0, mode="constant")
    noise = rng_noise.standard_normal(grid.shape, dtype=np.float32)
    if cfg.pet_noise_corr_mm > 0:
        noise = ndimage.gaussian_filter(noise, cfg.pet_noise_corr_mm / 2.3548 / sp, truncate=3.0, mode="wrap")
        noise /= max(float(noise.std()), 1e-12)
    pet = act + np.float32(cfg.pet_noise) * np.sqrt(np.maximum(act, 0)) * noise
    np.maximum(pet, 0, out=pet)
    pet = pet.astype(np.float32, copy=False)
    del noise, act

    ct += rng_noise.normal(0.0, cfg.ct_noise_hu, grid.shape).astype(np.float32)
    ct = np.rint(np.clip(ct, -1024, 3071)).astype(np.float32)
    label = lp.label

    lesions = []
    vox_ml = cfg.voxel_ml
    for i, rec in enumerate(lp.placed):
        sl, mask = rec["sl"], rec["mask"]
        vals = pet[sl][mask]
        local = np.where(mask, pet[sl], -np.inf)
        arg = np.unravel_index(int(np.argmax(local)), mask.shape)
        lesions.append({
            "index": i,
            "site": "bone" if rec["site"] == "bone" else (
                "prostate bed" if rec["site"] == "prostate bed" else "lymph node"),
            "region": rec["region"],
            "centre_voxel": [int(v) for v in rec["centre_voxel"]],
            "centre_mm": [round(v, 2) for v in grid.world(rec["centre_voxel"])],
            "n_voxels": int(mask.sum()),
            "volume_ml": round(float(mask.sum()) * vox_ml, 4),
            "target_volume_ml": round(rec["target_volume_ml"], 4),
            "target_suvmax": round(rec["target_suvmax"], 4),
            "uptake_suv": round(rec["uptake_suv"], 4),
            "suvmax": round(float(vals.max()), 4),
            "suvmean": round(float(vals.mean()), 4),
            "suvmax_voxel": [int(s.start + a) for s, a in zip(sl, arg)],
        })
    import cc3d

    n_comp = int(cc3d.connected_components(label, connectivity=18, return_N=True)[1])
    if n_comp != len(lesions):  # pragma: no cover - guarded by construction
        raise RuntimeError(f"{case_id}: {len(lesions)} lesions but {n_comp} connected components")
    return SynthCase(case_id=case_id, ct=ct, pet=pet, label=label, lesions=lesions, tissue=tissue,
                     disease=group, lesions_requested=n_lesions,
                     organ_suv={k: round(v, 4) for k, v in organ_suv.items()}, config=cfg)


def generate_case(case_id: str, rng_or_seed, config: SynthConfig | None = None):
    """One phantom: ``(ct, pet, label, lesions)``.

    ``ct`` float32 HU, ``pet`` float32 SUV, ``label`` uint8 {0, 1}, all (x, y, z) on the grid of
    ``config`` (default :class:`SynthConfig`); ``lesions`` lists one dict per lesion (= per
    18-connected component of ``label``): index, site ("bone", "lymph node", "prostate bed"),
    region, centre_voxel, centre_mm, n_voxels, volume_ml, target_volume_ml, uptake_suv, suvmax,
    suvmean, suvmax_voxel. ``rng_or_seed`` is an int, a SeedSequence or a Generator; the case
    depends on nothing else (``case_id`` only names it).
    """
    case = synthesize(case_id, rng_or_seed, config)
    return case.ct, case.pet, case.label, case.lesions
