"""Synthetic PSMA PET/CT phantoms: a deterministic stand-in for the study's cohort.

There is no public PSMA data on CI, so the default ``psma`` dataset is a synthetic cohort
written here, once, in the nnU-Net raw layout, and read by the ordinary loader. The phantoms
follow the study's data (PAPER.md §4) and the appendix "facts for realistic synthetic PSMA
PET/CT phantoms": a body with fat, soft tissue, lungs and a skeleton in CT (HU); low
background PET (SUV) with the physiological PSMA uptake that causes false positives
(kidneys, bladder, salivary and lacrimal glands, liver, spleen, bowel); and 1 to ~30
lesions per patient in bone, lymph nodes and the prostate bed, blurred by the scanner's
resolution and noisy.

Public API
----------
- :class:`SynthConfig`: every parameter, with the defaults listed below.
- :func:`generate_case` ``(case_id, rng_or_seed, config) -> (ct, pet, label, lesions)``.
- :func:`synthesize`: the same case with its tissue map and drawn organ uptakes (:class:`SynthCase`).
- :func:`generate_cohort` ``(out_dir, n_cases, seed, config=None, *, test_fraction=0.2)``:
  the nnU-Net raw layout plus ``dataset.json`` and ``manifest.json``, written atomically.
- :func:`default_cohort` ``(cache=None)``: the default cohort (40 cases, seed 0), generated on
  first use under ``lossbench.paths.cache_dir()``.
- :func:`case_seed`, :func:`case_affine`, :func:`label_strata`, :func:`config_for`.

Geometry and orientation
------------------------
Arrays are indexed (x, y, z). The affine is diagonal with the spacing (RAS+): index x grows
toward the patient's right, y toward anterior, z toward the head. World x and y are centred
on the field of view; world z is 0 at the first slice. CT and PET share one grid (the PET
grid, as in the study, where the CT was resampled to PET geometry).

The default grid is 112 x 80 x 224 voxels of 4 mm: a field of view of 44.8 x 32 x 89.6 cm,
from the upper thighs to the orbits. That holds the whole torso, the neck and the lower head
(salivary glands; lacrimal glands in most patients). 4 mm is a typical PET voxel; one voxel is
0.064 mL, so the smallest lesions drawn (0.1 mL) cover one or two voxels. Every lesion has at
least one voxel, so the smallest *representable* lesion volume is one voxel's volume: 0.064 mL
at 4 mm, 0.216 mL at 6 mm, 0.512 mL at 8 mm. :func:`config_for` keeps this field of view at
another spacing. A smaller field of view crops the same anatomy (it is laid out in mm from the
first slice), e.g. 96 x 96 x 128 at 4 mm covers the pelvis, abdomen and lung bases only.

Anatomy
-------
Per patient: height scale N(1, 0.025), scan start offset U(-20, 20) mm, subcutaneous fat
U(8, 30) mm with the girth following it, organ sizes and bladder filling.

CT (HU): air -1000; lungs N(-850, 25); fat N(-100, 10) (subcutaneous layer and visceral
fat islands); soft tissue N(40, 6); liver ~58, spleen ~48, kidneys ~32, bladder ~8, bowel ~20,
heart and aorta ~40, brain ~35; trabecular bone U(200, 400) with a cortical rim U(750, 1200)
(vertebral column with bodies, discs, arches and spinous processes; sacrum, iliac wings,
acetabula, pubic bones, femora; ribs, sternum, clavicles; skull and mandible). Gaussian noise
of ``ct_noise_hu``; values are rounded to integer HU (the files store int16, like real CT).

PET (SUV), per-patient draws N(mean, sd) (Li et al., J Nucl Med 2017 for the organs):
kidneys 20 +- 4.6, parotid 9.0 +- 2.0, submandibular 9.5 +- 2.2, lacrimal 6.5 +- 1.8,
liver 5.0 +- 0.7, spleen 4.0 +- 1.5, urinary bladder 30 +- 15 (very high), bowel/duodenum
4.0 +- 1.5 with segmental variation along a tortuous tube (duodenum x1.4), blood pool 1.6,
marrow 1.0, soft tissue 0.45 +- 0.08, fat 0.25, lung 0.15, brain 0.2, air 0. A draw is kept
at >= 30 % of its mean. The activity is blurred by a Gaussian of ``pet_fwhm_mm`` (partial
volume effect) and gets Poisson-like noise with SD ``pet_noise * sqrt(SUV)`` correlated over
``pet_noise_corr_mm``; it is clipped at 0. The label is not blurred.

Lesions (defaults)
------------------
- Count: a disease group is drawn first, then the count within it: oligometastatic 1-5
  (p = 0.60, P(k) proportional to 0.7**(k-1)), intermediate 6-15 (p = 0.25, uniform),
  disseminated 16-30 (p = 0.15, uniform). Every case has at least one lesion (the study
  dropped no-lesion studies).
- Site: with <= 5 lesions: prostate bed 0.20, pelvic node 0.45, retroperitoneal node 0.10,
  supradiaphragmatic node 0.03, bone 0.22; with more: 0.03, 0.22, 0.20, 0.10, 0.45. At most
  one prostate-bed lesion per patient. Bone lesions: spine 0.45, pelvis 0.35, rib 0.15,
  femur 0.05. Node regions follow the iliac chains, the aorta (para-aortic), the mediastinum
  and the supraclavicular fossae.
- Volume: log-normal, median 0.9 mL times a site factor (prostate bed 2.5, pelvic node 0.8,
  retroperitoneal node 1.0, supradiaphragmatic node 0.8, bone 1.6), ln-SD 1.2 per lesion plus
  a per-patient ln-offset of SD 0.8, clipped to [0.1, 100] mL. The label is the voxels at least
  half inside the blob (3x3x3 supersampling), and always the centre voxel.
- Activity: the *measured* SUVmax is drawn log-normal, median 8, ln-SD 0.6 per lesion plus a
  per-patient ln-offset of SD 0.45, clipped to [2, 80]. The lesion's activity is that value over
  the recovery coefficient of a sphere of its volume (blur and voxel size; at most 5x), with a
  hotter core (edge = peak * (1 - U(0, 0.4))), so that after blur and noise the SUVmax in the
  manifest (measured from the PET) lands near the draw, except for the smallest lesions.
- Shape: an ellipsoid (axis ratios ln-SD 0.2, random orientation) with smooth radial bumps;
  lesions never touch (at least one free voxel between them, 26-neighbourhood), so the
  number of lesions equals the number of 18-connected components of the label. Lesions stay
  clear of the high-uptake organs by ceil(FWHM / spacing) voxels, out of lungs and airways,
  and nodes out of bone. Node and prostate-bed lesions have soft-tissue HU; bone lesions are
  sclerotic (+150..500 HU) with probability 0.7.

A lesion that finds no room after 32 tries (shrinking its volume every 8) is dropped; the
manifest keeps the drawn count as ``lesions_requested`` (about 1 lesion in 300 is dropped).

Cohort layout (:func:`generate_cohort`)
---------------------------------------
``imagesTr/<ID>_0000.nii.gz`` CT (int16 HU), ``imagesTr/<ID>_0001.nii.gz`` PET (float32 SUV),
``labelsTr/<ID>.nii.gz`` (uint8), the same under ``imagesTs``/``labelsTs`` for held-out cases,
``dataset.json`` (nnU-Net v2: channel_names, labels, numTraining, numTest, file_ending) and
``manifest.json``: generator_version, seed, n_cases, n_train, n_test, test_fraction, shape,
spacing_mm, voxel_volume_ml, affine, config, and per case: id, index, split, seed,
seed_spawn_key, disease, lesions_requested, files, strata (lesion_count, tmtv_ml, suvmax,
suvmean, tla, dmax_cm; computed from the written label and PET as in PAPER.md §6.3, 18-connected
components, Dmax exact), organ_suv, and lesions (index, site, region, centre_voxel, centre_mm,
n_voxels, volume_ml, target_volume_ml, target_suvmax, uptake_suv, suvmax, suvmean, suvmax_voxel).

Determinism: a case depends only on its seed; in a cohort, case ``i`` uses
:func:`case_seed(seed, i) <case_seed>`, so the first 10 cases of a 40-case cohort are the 10
cases of a 10-case cohort, byte for byte. Files are byte-identical too (gzip mtime is 0).
Each case draws from separate streams (anatomy, texture, disease, placement, noise), so the
disease drawn for a case (group, count, organ SUVs) is the same at any grid size.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import secrets
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from lossbench.errors import LossbenchError, ParameterError

__all__ = [
    "DEFAULT_N_CASES",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "ID_PREFIX",
    "TISSUES",
    "SynthCase",
    "SynthConfig",
    "case_affine",
    "case_seed",
    "cohort_key",
    "config_for",
    "default_cohort",
    "generate_case",
    "generate_cohort",
    "label_strata",
    "synthesize",
]

#: Bumped whenever a change alters the generated data; part of the default cohort's cache key.
GENERATOR_VERSION = "1"
DEFAULT_N_CASES = 40
DEFAULT_SEED = 0
ID_PREFIX = "PSMA-SYN-"

# --------------------------------------------------------------------------------------------
# Configuration

DEFAULT_SHAPE = (112, 80, 224)
DEFAULT_SPACING = (4.0, 4.0, 4.0)

#: (group name, min count, max count, probability)
DEFAULT_COUNT_GROUPS = (
    ("oligometastatic", 1, 5, 0.60),
    ("intermediate", 6, 15, 0.25),
    ("disseminated", 16, 30, 0.15),
)
SITE_KEYS = ("prostate bed", "pelvic node", "retroperitoneal node", "supradiaphragmatic node", "bone")
DEFAULT_SITE_WEIGHTS_FEW = (
    ("prostate bed", 0.20), ("pelvic node", 0.45), ("retroperitoneal node", 0.10),
    ("supradiaphragmatic node", 0.03), ("bone", 0.22),
)
DEFAULT_SITE_WEIGHTS_MANY = (
    ("prostate bed", 0.03), ("pelvic node", 0.22), ("retroperitoneal node", 0.20),
    ("supradiaphragmatic node", 0.10), ("bone", 0.45),
)
#: Multiplies the median lesion volume per site.
DEFAULT_SITE_VOLUME_FACTOR = (
    ("prostate bed", 2.5), ("pelvic node", 0.8), ("retroperitoneal node", 1.0),
    ("supradiaphragmatic node", 0.8), ("bone", 1.6),
)
BONE_REGIONS = ("spine", "pelvis", "rib", "femur")
DEFAULT_BONE_WEIGHTS = (("spine", 0.45), ("pelvis", 0.35), ("rib", 0.15), ("femur", 0.05))

#: Per-patient SUV draws: (name, mean, sd).
DEFAULT_ORGAN_SUV = (
    ("kidney", 20.0, 4.6),
    ("parotid", 9.0, 2.0),
    ("submandibular", 9.5, 2.2),
    ("lacrimal", 6.5, 1.8),
    ("liver", 5.0, 0.7),
    ("spleen", 4.0, 1.5),
    ("bladder", 30.0, 15.0),
    ("bowel", 4.0, 1.5),
    ("blood", 1.6, 0.3),
    ("marrow", 1.0, 0.2),
    ("soft tissue", 0.45, 0.08),
    ("fat", 0.25, 0.05),
    ("lung", 0.15, 0.04),
    ("brain", 0.2, 0.05),
)


@dataclass(frozen=True)
class SynthConfig:
    """Every knob of the phantom generator; the module docstring explains the defaults.

    Sequences are tuples so that a config is hashable and has a stable JSON form
    (:meth:`to_dict`), which keys the default cohort's cache folder.
    """

    shape: tuple[int, int, int] = DEFAULT_SHAPE
    spacing: tuple[float, float, float] = DEFAULT_SPACING
    pet_fwhm_mm: float = 7.0
    pet_noise: float = 0.12
    pet_noise_corr_mm: float = 4.0
    ct_noise_hu: float = 10.0
    count_groups: tuple[tuple[str, int, int, float], ...] = DEFAULT_COUNT_GROUPS
    oligo_count_decay: float = 0.7
    site_weights_few: tuple[tuple[str, float], ...] = DEFAULT_SITE_WEIGHTS_FEW
    site_weights_many: tuple[tuple[str, float], ...] = DEFAULT_SITE_WEIGHTS_MANY
    few_max_count: int = 5
    bone_region_weights: tuple[tuple[str, float], ...] = DEFAULT_BONE_WEIGHTS
    volume_median_ml: float = 0.9
    site_volume_factor: tuple[tuple[str, float], ...] = DEFAULT_SITE_VOLUME_FACTOR
    volume_sigma: float = 1.2
    patient_volume_sigma: float = 0.8
    volume_range_ml: tuple[float, float] = (0.1, 100.0)
    suvmax_median: float = 8.0
    suvmax_sigma: float = 0.6
    patient_suvmax_sigma: float = 0.45
    suvmax_range: tuple[float, float] = (2.0, 80.0)
    lesion_irregularity: float = 1.0
    sclerotic_fraction: float = 0.7
    organ_suv: tuple[tuple[str, float, float], ...] = DEFAULT_ORGAN_SUV

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        spacing = self.spacing
        if isinstance(spacing, (int, float)):
            spacing = (spacing, spacing, spacing)
        try:
            set_(self, "shape", tuple(int(v) for v in self.shape))
            set_(self, "spacing", tuple(float(v) for v in spacing))
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"synth config: shape and spacing must be numbers ({exc})") from None
        set_(self, "count_groups", tuple((str(n), int(a), int(b), float(p)) for n, a, b, p in self.count_groups))
        for name in ("site_weights_few", "site_weights_many", "bone_region_weights", "site_volume_factor"):
            set_(self, name, tuple((str(k), float(w)) for k, w in getattr(self, name)))
        set_(self, "organ_suv", tuple((str(n), float(m), float(s)) for n, m, s in self.organ_suv))
        set_(self, "volume_range_ml", tuple(float(v) for v in self.volume_range_ml))
        set_(self, "suvmax_range", tuple(float(v) for v in self.suvmax_range))
        self._validate()

    def _validate(self) -> None:
        def bad(msg: str) -> ParameterError:
            return ParameterError(f"synth config: {msg}")

        if len(self.shape) != 3 or min(self.shape) < 8:
            raise bad(f"shape must be 3 sizes of at least 8 voxels, got {self.shape}")
        if len(self.spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in self.spacing):
            raise bad(f"spacing must be 3 positive mm values, got {self.spacing}")
        for name in ("pet_fwhm_mm", "pet_noise", "pet_noise_corr_mm", "ct_noise_hu", "volume_sigma",
                     "patient_volume_sigma", "suvmax_sigma", "patient_suvmax_sigma", "lesion_irregularity"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise bad(f"{name} must be >= 0, got {value}")
        if not self.count_groups:
            raise bad("count_groups is empty")
        for name, lo, hi, p in self.count_groups:
            if not (1 <= lo <= hi) or p < 0:
                raise bad(f"count group {name!r} needs 1 <= min <= max and p >= 0, got ({lo}, {hi}, {p})")
        if sum(p for *_, p in self.count_groups) <= 0:
            raise bad("count_groups probabilities sum to 0")
        if not 0 < self.oligo_count_decay <= 1:
            raise bad(f"oligo_count_decay must be in (0, 1], got {self.oligo_count_decay}")
        for name, keys in (("site_weights_few", SITE_KEYS), ("site_weights_many", SITE_KEYS),
                           ("bone_region_weights", BONE_REGIONS), ("site_volume_factor", SITE_KEYS)):
            weights = getattr(self, name)
            unknown = [k for k, _ in weights if k not in keys]
            if unknown or any(w < 0 for _, w in weights) or sum(w for _, w in weights) <= 0:
                raise bad(f"{name} needs non-negative weights, not all 0, over {', '.join(keys)}; got {weights}")
        lo, hi = self.volume_range_ml
        if not 0 < lo < hi or not 0 < self.volume_median_ml:
            raise bad(f"volume_range_ml must satisfy 0 < min < max, got {self.volume_range_ml}")
        lo, hi = self.suvmax_range
        if not 0 < lo < hi or not 0 < self.suvmax_median:
            raise bad(f"suvmax_range must satisfy 0 < min < max, got {self.suvmax_range}")
        if not 0 <= self.sclerotic_fraction <= 1:
            raise bad(f"sclerotic_fraction must be in [0, 1], got {self.sclerotic_fraction}")
        missing = {n for n, *_ in DEFAULT_ORGAN_SUV} - {n for n, *_ in self.organ_suv}
        if missing:
            raise bad(f"organ_suv lacks {', '.join(sorted(missing))}")
        if any(m <= 0 or s < 0 for _, m, s in self.organ_suv):
            raise bad("organ_suv means must be > 0 and sds >= 0")

    @property
    def voxel_ml(self) -> float:
        sx, sy, sz = self.spacing
        return sx * sy * sz / 1000.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


def config_for(shape: Sequence[int] | None = None, spacing: float | Sequence[float] | None = None,
               **overrides: Any) -> SynthConfig:
    """A config at ``spacing`` that keeps the default field of view unless ``shape`` is given."""
    if spacing is None:
        spacing = DEFAULT_SPACING
    if isinstance(spacing, (int, float)):
        spacing = (float(spacing),) * 3
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or not all(s > 0 for s in spacing):
        raise ParameterError(f"synth config: spacing must be 3 positive mm values, got {spacing}")
    if shape is None:
        shape = tuple(max(8, round(n * d / s)) for n, d, s in zip(DEFAULT_SHAPE, DEFAULT_SPACING, spacing))
    return SynthConfig(shape=tuple(shape), spacing=spacing, **overrides)


def case_affine(config: SynthConfig) -> np.ndarray:
    """The 4x4 voxel-to-world (RAS+, mm) affine shared by CT, PET and label."""
    (nx, ny, _), (sx, sy, sz) = config.shape, config.spacing
    affine = np.diag([sx, sy, sz, 1.0])
    affine[:3, 3] = [-(nx - 1) / 2 * sx, -(ny - 1) / 2 * sy, 0.0]
    return affine


def case_seed(seed: int, index: int) -> np.random.SeedSequence:
    """The seed of case ``index`` in a cohort of seed ``seed`` (independent of the cohort size)."""
    return np.random.SeedSequence(int(seed), spawn_key=(int(index), 0))


def _split_draw(seed: int, index: int) -> float:
    return float(np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(int(index), 1))).random())


# --------------------------------------------------------------------------------------------
# Tissues

TISSUES = (
    "air", "lung", "fat", "soft tissue", "liver", "spleen", "kidney", "bladder", "bowel", "heart",
    "aorta", "airway", "brain", "parotid", "submandibular", "lacrimal", "trabecular bone", "cortical bone",
)
(AIR, LUNG, FAT, SOFT, LIVER, SPLEEN, KIDNEY, BLADDER, BOWEL, HEART, AORTA, AIRWAY, BRAIN,
 PAROTID, SUBMAND, LACRIMAL, TRAB, CORT) = range(len(TISSUES))

#: Organs with high physiological uptake, kept clear of lesions (they would hide them).
_HOT = (KIDNEY, BLADDER, LIVER, SPLEEN, BOWEL, PAROTID, SUBMAND, LACRIMAL)
_REGION_CODE = {name: i + 1 for i, name in enumerate(BONE_REGIONS)}


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
# Geometry helpers


class _Grid:
    """Voxel-centre coordinates (mm) and local bounding boxes."""

    def __init__(self, config: SynthConfig) -> None:
        self.shape = config.shape
        self.spacing = np.asarray(config.spacing, float)
        aff = case_affine(config)
        self.origin = aff[:3, 3].copy()
        self.axes = [self.origin[a] + np.arange(n) * self.spacing[a] for a, n in enumerate(self.shape)]

    def index_range(self, lo: Sequence[float], hi: Sequence[float]) -> tuple[list[int], list[int]]:
        i0 = [max(0, math.ceil((lo[a] - self.origin[a]) / self.spacing[a] - 1e-9)) for a in range(3)]
        i1 = [min(self.shape[a], math.floor((hi[a] - self.origin[a]) / self.spacing[a] + 1e-9) + 1)
              for a in range(3)]
        return i0, i1

    def box(self, lo: Sequence[float], hi: Sequence[float]):
        """Slices and broadcastable X, Y, Z over the voxels whose centres lie in [lo, hi]; None if empty."""
        i0, i1 = self.index_range(lo, hi)
        if any(b <= a for a, b in zip(i0, i1)):
            return None
        sl = tuple(slice(a, b) for a, b in zip(i0, i1))
        x = self.axes[0][sl[0]][:, None, None]
        y = self.axes[1][sl[1]][None, :, None]
        z = self.axes[2][sl[2]][None, None, :]
        return sl, x, y, z

    def voxel(self, p: Sequence[float]) -> tuple[int, int, int]:
        return tuple(int(round((p[a] - self.origin[a]) / self.spacing[a])) for a in range(3))

    def world(self, v: Sequence[int]) -> list[float]:
        return [float(self.origin[a] + v[a] * self.spacing[a]) for a in range(3)]


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def _tilt(axis: int, degrees: float) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


class _Painter:
    """Paints tissue codes into the phantom with simple solids in local boxes."""

    def __init__(self, grid: _Grid) -> None:
        self.g = grid
        self.tissue = np.zeros(grid.shape, np.uint8)
        self.region = np.zeros(grid.shape, np.uint8)  # bone region codes
        self.inner = np.zeros(grid.shape, bool)        # inside the subcutaneous fat layer
        self.min_half = 0.55 * float(grid.spacing.max())

    def _put(self, sl, mask, code, over=None, inner=False, region=0):
        t = self.tissue[sl]
        m = mask & (t != AIR)
        if over is not None:
            m &= np.isin(t, over)
        if inner:
            m &= self.inner[sl]
        t[m] = code
        if region:
            self.region[sl][m] = region
        return m

    def ellipsoid(self, c, semi, code, rot=None, **kw):
        semi = np.maximum(np.asarray(semi, float), self.min_half)
        ext = semi.max() if rot is not None else semi
        b = self.g.box(np.asarray(c) - ext, np.asarray(c) + ext)
        if b is None:
            return None
        sl, x, y, z = b
        d = (x - c[0], y - c[1], z - c[2])
        if rot is not None:  # body frame coordinates: u = R^T d
            d = tuple(rot[0, k] * d[0] + rot[1, k] * d[1] + rot[2, k] * d[2] for k in range(3))
        mask = (d[0] / semi[0]) ** 2 + (d[1] / semi[1]) ** 2 + (d[2] / semi[2]) ** 2 <= 1.0
        return sl, self._put(sl, mask, code, **kw)

    def capsule(self, p0, p1, r, code, **kw):
        r = max(r, self.min_half)
        p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
        b = self.g.box(np.minimum(p0, p1) - r, np.maximum(p0, p1) + r)
        if b is None:
            return None
        sl, x, y, z = b
        d = p1 - p0
        dd = float(d @ d) or 1.0
        t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1] + (z - p0[2]) * d[2]) / dd, 0.0, 1.0)
        dist2 = (x - p0[0] - t * d[0]) ** 2 + (y - p0[1] - t * d[1]) ** 2 + (z - p0[2] - t * d[2]) ** 2
        return sl, self._put(sl, dist2 <= r * r, code, **kw)

    def polyline(self, points, r, code, **kw):
        for p0, p1 in zip(points[:-1], points[1:]):
            self.capsule(p0, p1, r, code, **kw)

    def block(self, lo, hi, code, **kw):
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        mid, half = (lo + hi) / 2, np.maximum((hi - lo) / 2, self.min_half)
        b = self.g.box(mid - half, mid + half)
        if b is None:
            return None
        sl = b[0]
        return sl, self._put(sl, np.ones(tuple(s.stop - s.start for s in sl), bool), code, **kw)


# --------------------------------------------------------------------------------------------
# Anatomy: the standard layout in mm (x right, y anterior, z above the first slice), then
# mapped per patient.

#: Torso outline: (z, semi-axis x, semi-axis y, centre y) for a girth of 1.
_BODY = np.array([
    (20, 0, 0, 0), (40, 140, 100, 0), (70, 160, 110, 0), (110, 172, 115, 0), (200, 168, 115, 0),
    (270, 155, 115, 0), (360, 150, 112, 0), (450, 155, 110, 0), (560, 165, 108, 0), (650, 172, 102, 0),
    (700, 172, 95, 0), (725, 125, 78, 0), (745, 62, 58, 5), (790, 58, 58, 8), (815, 68, 78, 12),
    (850, 74, 92, 8), (900, 76, 96, 5), (950, 72, 92, 0), (990, 52, 66, 0), (1005, 0, 0, 0),
], float)
#: Relative subcutaneous fat thickness along z.
_FAT = np.array([(0, 1.0), (150, 1.0), (250, 1.35), (420, 1.3), (520, 1.0), (700, 0.9), (745, 0.45), (1005, 0.3)])
#: Centre y of the vertebral bodies along z (lordosis, kyphosis).
_SPINE_Y = np.array([(150, -58), (235, -35), (330, -22), (415, -30), (550, -50), (650, -48), (715, -38),
                     (760, -22), (820, -15)], float)
#: Vertebrae: (name, z0, z1, semi x, semi y, disc fraction)
_VERTEBRAE = (
    [(f"L{5 - i}", 235 + 36 * i, 271 + 36 * i, 25, 17, 0.22) for i in range(5)]
    + [(f"T{12 - i}", 415 + 25 * i, 440 + 25 * i, 21 - 7 * i / 11, 16 - 4 * i / 11, 0.18) for i in range(12)]
    + [(f"C{7 - i}", 715 + 16.5 * i, 731.5 + 16.5 * i, 12, 9, 0.2) for i in range(6)]
)


class _Patient:
    """Per-patient anatomical draws and the standard-to-world mapping."""

    def __init__(self, rng: np.random.Generator, grid: _Grid) -> None:
        self.sz = float(np.clip(rng.normal(1.0, 0.025), 0.94, 1.06))
        self.z0 = float(rng.uniform(-20.0, 20.0))
        self.fat = float(rng.uniform(8.0, 30.0))
        self.girth = float(np.clip(1.0 + (self.fat - 18.0) / 100.0 + rng.normal(0, 0.03), 0.85, 1.17))
        self.frame = float(np.clip(rng.normal(1.0, 0.03), 0.92, 1.08))
        self.grid = grid

    def zw(self, zs):
        return self.z0 + self.sz * np.asarray(zs, float)

    def zs(self, zw):
        return (np.asarray(zw, float) - self.z0) / self.sz

    def p(self, x, y, zs):
        """World point of a standard (x, y, z) point."""
        return np.array([x * self.frame, y * self.frame, float(self.zw(zs))])

    def spine_y(self, zs) -> float:
        return float(np.interp(zs, _SPINE_Y[:, 0], _SPINE_Y[:, 1])) * self.frame

    def profile(self, zs):
        """Torso semi-axes a, b, centre y and fat thickness at standard heights zs (arrays)."""
        a = np.interp(zs, _BODY[:, 0], _BODY[:, 1], left=0.0, right=0.0)
        b = np.interp(zs, _BODY[:, 0], _BODY[:, 2], left=0.0, right=0.0)
        yc = np.interp(zs, _BODY[:, 0], _BODY[:, 3])
        torso = np.clip((745 - zs) / 30.0, 0.0, 1.0)  # girth applies below the neck
        scale = 1.0 + (self.girth - 1.0) * torso
        fat = self.fat * np.interp(zs, _FAT[:, 0], _FAT[:, 1])
        return a * scale, b * scale, yc, fat


def _paint_body(pt: _Painter, pa: _Patient, tex: np.ndarray) -> None:
    g = pt.g
    x = g.axes[0][:, None, None]
    y = g.axes[1][None, :, None]
    zs = pa.zs(g.axes[2])
    a, b, yc, fat = pa.profile(zs)
    a, b, yc, fat = (v[None, None, :] for v in (a, b, yc, fat))
    with np.errstate(divide="ignore", invalid="ignore"):
        outer = (x / a) ** 2 + ((y - yc) / b) ** 2 <= 1.0
        ai, bi = np.maximum(a - fat, 1e-3), np.maximum(b - fat, 1e-3)
        inner = (x / ai) ** 2 + ((y - yc) / bi) ** 2 <= 1.0
    outer &= a > 0
    inner &= outer & (a > fat)
    # thighs
    legs = zs < 95
    if legs.any():
        k = np.flatnonzero(legs)
        for side in (1, -1):
            cx, ta, tb = side * 88 * pa.frame * pa.girth, 78 * pa.girth, 82 * pa.girth
            lo = ((x - cx) / ta) ** 2 + ((y + 5) / tb) ** 2 <= 1.0
            li = ((x - cx) / np.maximum(ta - pa.fat, 1)) ** 2 + ((y + 5) / np.maximum(tb - pa.fat, 1)) ** 2 <= 1.0
            outer[:, :, k] |= lo
            inner[:, :, k] |= li
    pt.tissue[outer] = FAT
    pt.tissue[inner] = SOFT
    pt.inner = inner
    # visceral fat islands in the abdomen and pelvis
    vz = (zs > 60) & (zs < 470)
    if vz.any():
        k = np.flatnonzero(vz)
        sub = pt.tissue[:, :, k]
        sub[inner[:, :, k] & (tex[1][:, :, k] > 0.45)] = FAT
        pt.tissue[:, :, k] = sub


def _paint_bowel(pt: _Painter, pa: _Patient, rng: np.random.Generator, bowel_suv: float):
    """A tortuous tube (duodenum first) through the abdomen; returns (slices, mask, SUV) or None."""
    lo, hi = np.array([-95.0, -10.0, 185.0]), np.array([95.0, 75.0, 340.0])
    n = 150
    pts = np.empty((n, 3))
    pts[0] = (25.0, 20.0, 350.0)
    d = np.array([0.2, 0.0, -1.0])
    for i in range(1, n):
        d = 0.75 * d / np.linalg.norm(d) + rng.normal(0, 0.55, 3)
        d /= np.linalg.norm(d)
        nxt = pts[i - 1] + 7.0 * d
        out = (nxt < lo) | (nxt > hi)
        d[out] *= -1
        pts[i] = np.clip(pts[i - 1] + 7.0 * d, lo, hi)
    world = np.array([pa.p(*q) for q in pts])
    smooth = np.convolve(rng.normal(0, 1, n + 8), np.ones(9) / 3.0, mode="valid")[:n]
    suv = bowel_suv * np.exp(0.35 * smooth)
    suv[:12] *= 1.4  # duodenum
    r = 11.0
    b = pt.g.box(world.min(0) - r - 1, world.max(0) + r + 1)
    if b is None:
        return None
    sl = b[0]
    shape = tuple(s.stop - s.start for s in sl)
    seeds = np.zeros(shape, np.int32)
    vox = np.array([pt.g.voxel(q) for q in world]) - np.array([s.start for s in sl])
    ok = np.all((vox >= 0) & (vox < np.array(shape)), axis=1)
    for i in np.flatnonzero(ok):
        seeds[tuple(vox[i])] = i + 1
    if not seeds.any():
        return None
    dist, idx = ndimage.distance_transform_edt(seeds == 0, sampling=pt.g.spacing, return_indices=True)
    tube = dist <= r
    mask = pt._put(sl, tube, BOWEL, over=(SOFT, FAT), inner=True)
    nearest = seeds[tuple(idx)]
    values = suv[np.maximum(nearest, 1) - 1].astype(np.float32)
    return sl, mask, values


def _paint_organs(pt: _Painter, pa: _Patient, rng: np.random.Generator) -> None:
    p = pa.p
    # urinary bladder, kidneys (with renal sinus), liver, spleen
    fill = rng.uniform(0.7, 1.2)
    pt.ellipsoid(p(0, 42, 140), np.array([45, 36, 32]) * fill, BLADDER, inner=True)
    for side, zk in ((1, 360), (-1, 382)):
        rot = _tilt(1, side * 12) @ _tilt(0, -10)
        c = p(side * 62, -32, zk)
        pt.ellipsoid(c, (26, 22, 55), KIDNEY, rot=rot, inner=True)
        pt.ellipsoid(c + np.array([-side * 16, 4, 0]), (9, 9, 22), FAT, over=(KIDNEY,))
    pt.ellipsoid(p(52, 5, 452), np.array([100, 85, 82]) * rng.uniform(0.92, 1.08), LIVER, inner=True,
                 rot=_tilt(1, -8))
    pt.ellipsoid(p(-84, -38, 462), np.array([28, 45, 52]) * rng.uniform(0.8, 1.25), SPLEEN, inner=True,
                 rot=_tilt(2, 30))
    # lungs carve the liver and spleen domes; then heart, great vessels and airway
    for side in (1, -1):
        pt.ellipsoid(p(side * 76, -5, 598), (68, 86, 142), LUNG, inner=True,
                     over=(SOFT, FAT, LIVER, SPLEEN, BOWEL))
    pt.ellipsoid(p(-25, 32, 548), (60, 50, 55), HEART, rot=_tilt(1, 20), inner=True)
    ya = lambda zs: pa.spine_y(zs) / pa.frame + 30  # noqa: E731  (anterior to the vertebral bodies)
    pt.polyline([p(-12, ya(250), 250), p(-14, ya(450), 450), p(-12, ya(600), 600), p(0, 22, 628),
                 p(10, 30, 585)], 12, AORTA, inner=True)
    pt.polyline([p(0, 30, 790), p(0, 26, 700), p(0, 10, 612)], 9, AIRWAY, inner=True)
    for side in (1, -1):
        pt.capsule(p(0, 10, 612), p(side * 40, 5, 590), 6, AIRWAY, inner=True)
    # head and neck: brain, salivary and lacrimal glands
    pt.ellipsoid(p(0, 8, 905), (62, 78, 80), BRAIN, over=(SOFT, FAT))
    for side in (1, -1):
        pt.ellipsoid(p(side * 36, 32, 806), (14, 12, 11), SUBMAND, over=(SOFT, FAT))
        pt.ellipsoid(p(side * 54, 0, 843), (11, 19, 23), PAROTID, over=(SOFT, FAT))
        pt.ellipsoid(p(side * 32, 62, 890), (10, 6, 5), LACRIMAL, over=(SOFT, FAT, BRAIN))


def _paint_skeleton(pt: _Painter, pa: _Patient) -> None:
    p, g = pa.p, pt.g
    code = _REGION_CODE
    bone_over = (SOFT, FAT, LUNG, BOWEL, TRAB)
    # ribs, sternum, clavicles
    for name, z0, z1, *_rest in _VERTEBRAE:
        if not name.startswith("T"):
            continue
        level = 12 - int(name[1:])  # 0 for T12 ... 11 for T1
        zc = (z0 + z1) / 2
        a, b, yc, fat = (float(v[0]) for v in pa.profile(np.array([zc])))
        ar, br = a - fat - 14, b - fat - 14
        if ar <= 20 or br <= 20:
            continue
        drop = 0.35
        zw = float(pa.zw(zc))
        bx = g.box((-ar - 10, yc - br - 10, zw - drop * 2 * br - 12), (ar + 10, yc + br + 10, zw + 12))
        if bx is None:
            continue
        sl, x, y, z = bx
        rho = np.sqrt((x / ar) ** 2 + ((y - yc) / br) ** 2)
        half = max(5.0, 0.6 * float(g.spacing.max()))
        ring = np.abs(rho - 1.0) * (ar + br) / 2 <= half
        zrib = zw - drop * (y - (yc - br)) * pa.sz
        band = np.abs(z - zrib) <= max(5.0, 0.6 * float(g.spacing[2]))
        # T1-T7 reach the sternum, T8-T10 stop anterolaterally, T11-T12 (floating) stay posterior
        reach = br if level >= 5 else (0.5 * br if level >= 2 else -0.1 * br)
        m = ring & band & (np.abs(x) >= 26) & ((y - yc) <= reach)
        pt._put(sl, m, TRAB, over=bone_over, region=code["rib"])
    zst = np.array([520, 700])
    yst = float(np.interp(610, _BODY[:, 0], _BODY[:, 2])) * pa.girth - pa.fat - 10
    pt.block(p(-16, yst - 7, zst[0]), p(16, yst + 7, zst[1]), TRAB, over=bone_over)
    for side in (1, -1):
        pt.capsule(p(side * 20, 62, 702), p(side * 148, 5, 722), 8, TRAB, over=bone_over)
    # vertebral column
    for name, z0, z1, ax, ay, disc in _VERTEBRAE:
        h = z1 - z0
        zb0, zb1 = z0 + disc * h, z1
        zc = (zb0 + zb1) / 2
        yb = pa.spine_y(zc) / pa.frame
        c = p(0, yb, zc)
        semi = (ax * pa.frame, ay * pa.frame, (zb1 - zb0) / 2 * pa.sz)
        bx = g.box(c - np.array(semi), c + np.array(semi))
        if bx is not None:
            sl, x, y, z = bx
            m = ((x - c[0]) / semi[0]) ** 2 + ((y - c[1]) / semi[1]) ** 2 <= 1.0
            pt._put(sl, m, TRAB, over=bone_over + (AORTA,), region=code["spine"])
        ycan = yb - ay - 10
        # neural arch (posterior half ring around the canal), spinous and transverse processes
        za, zb = z0 + disc * h + 0.15 * h, z1 - 0.1 * h
        ring_c = p(0, ycan, (za + zb) / 2)
        half_z = (zb - za) / 2 * pa.sz
        bx = g.box(ring_c - np.array([17, 17, half_z]), ring_c + np.array([17, 8, half_z]))
        if bx is not None:
            sl, x, y, z = bx
            r = np.sqrt((x - ring_c[0]) ** 2 + (y - ring_c[1]) ** 2)
            lo = min(9.0 * pa.frame, 16.5 * pa.frame - 2 * pt.min_half)
            m = (r >= lo) & (r <= 16.5 * pa.frame) & (y <= ring_c[1] + 4)
            pt._put(sl, m, TRAB, over=bone_over, region=code["spine"])
        length = 28 if name[0] != "C" else 16
        pt.block(p(-4, ycan - 14 - length, za), p(4, ycan - 14, zb), TRAB, over=bone_over, region=code["spine"])
        if name[0] != "C":
            pt.block(p(-(ax + 22), ycan - 4, za), p(ax + 22, ycan + 6, zb), TRAB, over=bone_over,
                     region=code["spine"])
    # sacrum (tilted wedge), iliac wings, acetabula, pubic and ischial bones
    zs_lo, zs_hi = 135.0, 235.0
    bx = g.box((-60, -120, float(pa.zw(zs_lo))), (60, 20, float(pa.zw(zs_hi))))
    if bx is not None:
        sl, x, y, z = bx
        t = np.clip((pa.zs(z) - zs_lo) / (zs_hi - zs_lo), 0, 1)
        sa, sb = (15 + 35 * t) * pa.frame, (9 + 14 * t) * pa.frame
        syc = (-75 + 40 * t) * pa.frame
        m = (x / sa) ** 2 + ((y - syc) / sb) ** 2 <= 1.0
        pt._put(sl, m, TRAB, over=bone_over, region=code["pelvis"])
    for side in (1, -1):
        cx, cy = side * 55 * pa.frame, -5 * pa.frame
        bx = g.box((cx - 90, cy - 90, float(pa.zw(140))), (cx + 90, cy + 90, float(pa.zw(252))))
        if bx is not None:
            sl, x, y, z = bx
            zn = pa.zs(z)
            rad = (52 + 0.25 * (zn - 140)) * pa.frame
            dx, dy = side * (x - cx), y - cy
            r = np.sqrt(dx * dx + dy * dy)
            ang = np.degrees(np.arctan2(dy, dx))
            amin = -105 + 40 * np.clip((200 - zn) / 60, 0, 1)
            thick = max(6.0, 0.6 * float(g.spacing.max()))
            m = (np.abs(r - rad) <= thick) & (ang >= amin) & (ang <= 35)
            pt._put(sl, m, TRAB, over=bone_over, region=code["pelvis"])
        head = p(side * 85, 5, 105)
        pt.capsule(p(side * 68, -40, 162), head + [0, 0, 20 * pa.sz], 14, TRAB, over=bone_over, region=code["pelvis"])
        bx = g.box(head - 33, head + 33)
        if bx is not None:  # acetabular shell, upper-medial
            sl, x, y, z = bx
            r = np.sqrt((x - head[0]) ** 2 + (y - head[1]) ** 2 + (z - head[2]) ** 2)
            shell = (r >= 26) & (r <= 26 + max(6.0, 2.2 * pt.min_half))
            m = shell & (side * (x - head[0]) <= 8) & (z >= head[2] - 12)
            pt._put(sl, m, TRAB, over=bone_over, region=code["pelvis"])
        pt.block(p(side * 4, 62, 82), p(side * 24, 86, 116), TRAB, over=bone_over, region=code["pelvis"])
        pt.capsule(p(side * 18, 72, 110), p(side * 66, 30, 112), 9, TRAB, over=bone_over, region=code["pelvis"])
        pt.polyline([p(side * 16, 68, 84), p(side * 52, -30, 68), p(side * 70, -15, 98)], 10, TRAB,
                    over=bone_over, region=code["pelvis"])
        # femur: head, neck, shaft
        pt.ellipsoid(head, (24, 24, 24), TRAB, over=bone_over, region=code["femur"])
        pt.capsule(head, p(side * 108, 0, 92), 13, TRAB, over=bone_over, region=code["femur"])
        pt.capsule(p(side * 108, 0, 95), p(side * 98, 2, -30), 14, TRAB, over=bone_over, region=code["femur"])
    # skull and mandible
    c = p(0, 8, 905)
    bx = g.box(c - np.array([75, 92, 95]), c + np.array([75, 92, 95]))
    if bx is not None:
        sl, x, y, z = bx
        q_out = ((x - c[0]) / 70) ** 2 + ((y - c[1]) / 86) ** 2 + ((z - c[2]) / 88) ** 2
        q_in = ((x - c[0]) / 62) ** 2 + ((y - c[1]) / 78) ** 2 + ((z - c[2]) / 80) ** 2
        m = (q_out <= 1) & (q_in > 1) & (z >= pa.zw(858))
        pt._put(sl, m, TRAB, over=bone_over + (BRAIN,))
    mc = p(0, 10, 805)
    bx = g.box(mc - np.array([60, 65, 12]), mc + np.array([60, 65, 12]))
    if bx is not None:
        sl, x, y, z = bx
        r = np.sqrt(((x - mc[0]) / 50) ** 2 + ((y - mc[1]) / 55) ** 2)
        m = (np.abs(r - 1.0) * 52 <= max(4.5, pt.min_half)) & (y >= mc[1] - 15)
        pt._put(sl, m, TRAB, over=(SOFT, FAT))
    for side in (1, -1):
        pt.capsule(p(side * 48, 0, 806), p(side * 50, -6, 842), 6, TRAB, over=(SOFT, FAT))


def _cortical_rim(pt: _Painter) -> None:
    bone = pt.tissue == TRAB
    if not bone.any():
        return
    core = ndimage.binary_erosion(bone, border_value=0)
    pt.tissue[bone & ~core] = CORT


def _linear_weights(n_fine: int, n_coarse: int) -> np.ndarray:
    """(n_fine, n_coarse) matrix of linear interpolation from a coarse to a fine grid (same extent)."""
    t = np.clip((np.arange(n_fine) + 0.5) / n_fine * n_coarse - 0.5, 0, n_coarse - 1)
    i0 = np.minimum(np.floor(t).astype(int), n_coarse - 2)
    w = t - i0
    m = np.zeros((n_fine, n_coarse))
    m[np.arange(n_fine), i0] = 1 - w
    m[np.arange(n_fine), i0 + 1] = w
    return m


def _texture(rng: np.random.Generator, grid: _Grid, channels: int = 2, scale_mm: float = 16.0) -> np.ndarray:
    """Smooth unit-variance random fields (correlation length ~ scale_mm) on the grid."""
    coarse = tuple(max(2, math.ceil(n * s / scale_mm) + 1) for n, s in zip(grid.shape, grid.spacing))
    f = rng.standard_normal((channels, *coarse))
    f = ndimage.gaussian_filter(f, (0, 1.0, 1.0, 1.0), mode="wrap")
    f /= f.std(axis=(1, 2, 3), keepdims=True)
    wx, wy, wz = (_linear_weights(n, c) for n, c in zip(grid.shape, coarse))
    f = np.einsum("kc,abc->abk", wz, f.reshape(channels * coarse[0], coarse[1], coarse[2]))
    f = np.einsum("jb,abk->ajk", wy, f).reshape(channels, coarse[0], grid.shape[1], grid.shape[2])
    out = np.einsum("ia,caj->cij", wx, f.reshape(channels, coarse[0], -1))
    return np.ascontiguousarray(out.reshape(channels, *grid.shape), dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Lesions

_NODE_OK = (SOFT, FAT)
_BONE_OK = (SOFT, FAT, TRAB, CORT)


def _pick(rng: np.random.Generator, weights: Sequence[tuple[str, float]]) -> str:
    names = [n for n, _ in weights]
    w = np.array([v for _, v in weights], float)
    return names[int(rng.choice(len(names), p=w / w.sum()))]


def _lesion_count(rng: np.random.Generator, cfg: SynthConfig) -> tuple[str, int]:
    p = np.array([g[3] for g in cfg.count_groups], float)
    name, lo, hi, _ = cfg.count_groups[int(rng.choice(len(p), p=p / p.sum()))]
    k = np.arange(lo, hi + 1)
    w = cfg.oligo_count_decay ** (k - lo) if hi <= cfg.few_max_count else np.ones(len(k))
    return name, int(rng.choice(k, p=w / w.sum()))


def _recovery(volume_ml: float, fwhm_mm: float, spacing: Sequence[float]) -> float:
    """Centre recovery coefficient of a uniform sphere of ``volume_ml`` after the PET blur and
    voxel averaging (Gaussian approximation of both)."""
    r = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    sigma = math.sqrt((fwhm_mm / 2.3548) ** 2 + float(np.mean(np.square(spacing))) / 12.0)
    q = r / sigma
    return math.erf(q / math.sqrt(2.0)) - math.sqrt(2.0 / math.pi) * q * math.exp(-0.5 * q * q)


class _LesionPainter:
    def __init__(self, cfg: SynthConfig, grid: _Grid, pa: _Patient, tissue: np.ndarray, region: np.ndarray,
                 ct: np.ndarray, act: np.ndarray) -> None:
        self.cfg, self.g, self.pa = cfg, grid, pa
        self.tissue, self.region, self.ct, self.act = tissue, region, ct, act
        self.label = np.zeros(grid.shape, np.uint8)
        self.occupied = np.zeros(grid.shape, bool)
        margin = max(1, math.ceil(cfg.pet_fwhm_mm / float(grid.spacing.min()))) if cfg.pet_fwhm_mm > 0 else 1
        hot = np.isin(tissue, _HOT)
        hot = ndimage.maximum_filter(hot, size=2 * margin + 1, mode="constant")
        self.ok_node = np.isin(tissue, _NODE_OK) & ~hot
        self.ok_bone = np.isin(tissue, _BONE_OK) & ~hot
        self.bone_candidates: dict[str, np.ndarray] = {}
        self.placed: list[dict[str, Any]] = []

    # -- centres --------------------------------------------------------------------------
    def _bone_centre(self, rng, region: str):
        if region not in self.bone_candidates:
            code = _REGION_CODE[region]
            cand = np.flatnonzero((self.region == code) & (self.tissue == TRAB) & self.ok_bone)
            if cand.size == 0:
                cand = np.flatnonzero((self.region == code) & (self.tissue == CORT) & self.ok_bone)
            self.bone_candidates[region] = cand
        cand = self.bone_candidates[region]
        if cand.size == 0:
            return None
        v = np.unravel_index(int(cand[rng.integers(cand.size)]), self.g.shape)
        return np.array(self.g.world(v)) + rng.uniform(-0.5, 0.5, 3) * self.g.spacing

    def _node_centre(self, rng, site: str):
        p, pa = self.pa.p, self.pa
        if site == "prostate bed":
            return p(0, 40, 88) + rng.normal(0, [7, 6, 6])
        if site == "pelvic node":
            side = rng.choice([-1, 1])
            chains = [
                [(15, -12, 240), (45, 0, 182), (66, 25, 118)],   # common/external iliac
                [(45, 0, 182), (45, -22, 125), (52, 8, 96)],     # internal iliac, obturator
                [(0, -45, 175), (0, -40, 120)],                  # presacral / perirectal
            ]
            chain = chains[int(rng.choice(3, p=[0.55, 0.35, 0.10]))]
            spread = 11.0
        elif site == "retroperitoneal node":
            zs = rng.uniform(245, 420)
            yb = pa.spine_y(zs) / pa.frame + 30
            side = 1
            chain = [(rng.choice([-32.0, -12.0, 10.0]), yb, zs)] * 2
            spread = 9.0
        else:  # supradiaphragmatic: mediastinal or supraclavicular
            side = rng.choice([-1, 1])
            if rng.random() < 0.6:
                chain = [(0, 15, 560), (0, 20, 640)]
                spread = 14.0
            else:
                chain = [(55, 20, 712), (40, 5, 740)]
                spread = 9.0
        pts = np.array([(side * q[0], q[1], q[2]) for q in chain], float)
        seg = int(rng.integers(max(1, len(pts) - 1)))
        t = rng.random()
        q = pts[seg] + t * (pts[min(seg + 1, len(pts) - 1)] - pts[seg])
        return p(*q) + rng.normal(0, spread, 3)

    # -- one blob -------------------------------------------------------------------------
    def _blob(self, rng, centre, volume_ml, uptake):
        cfg, g = self.cfg, self.g
        r0 = (3.0 * volume_ml * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
        elong = np.exp(rng.normal(0.0, 0.2, 3))
        elong /= np.prod(elong) ** (1.0 / 3.0)
        axes = r0 * elong
        rot = _rotation(rng)
        nb = 5
        dirs = rng.normal(size=(nb, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        amps = rng.uniform(-0.22, 0.28, nb) * cfg.lesion_irregularity
        hot_core = rng.uniform(0.0, 0.4)
        pmax = 1.0 + np.clip(amps, 0, None).sum()
        ext = axes.max() * pmax + g.spacing  # + one voxel of padding for the neighbourhood
        i0, i1 = g.index_range(centre - ext, centre + ext)
        cv = g.voxel(centre)
        if any(a >= b for a, b in zip(i0, i1)) or not all(0 < c < n - 1 for c, n in zip(cv, g.shape)):
            return None
        if any(i0[a] == 0 and g.axes[a][0] > centre[a] - ext[a] for a in range(3)) or any(
                i1[a] == g.shape[a] and g.axes[a][-1] < centre[a] + ext[a] for a in range(3)):
            return None  # would be cut by the field of view
        ss = 3
        off = [((np.arange(ss) + 0.5) / ss - 0.5) * g.spacing[a] for a in range(3)]
        xs = (g.axes[0][i0[0]:i1[0], None] + off[0][None, :] - centre[0])[:, :, None, None, None, None]
        ys = (g.axes[1][i0[1]:i1[1], None] + off[1][None, :] - centre[1])[None, None, :, :, None, None]
        zs = (g.axes[2][i0[2]:i1[2], None] + off[2][None, :] - centre[2])[None, None, None, None, :, :]
        u = [(rot[0, k] * xs + rot[1, k] * ys + rot[2, k] * zs) / axes[k] for k in range(3)]
        rho = np.sqrt(u[0] ** 2 + u[1] ** 2 + u[2] ** 2)
        safe = np.maximum(rho, 1e-9)
        bump = np.ones_like(rho)
        for d, amp in zip(dirs, amps):
            cos = (u[0] * d[0] + u[1] * d[1] + u[2] * d[2]) / safe
            bump += amp * np.exp((cos - 1.0) / 0.35)
        bump = np.maximum(bump, 0.35)
        ratio = rho / bump
        inside = ratio <= 1.0
        profile = np.where(inside, uptake * (1.0 - hot_core * ratio ** 2), 0.0)
        frac = inside.mean(axis=(1, 3, 5))
        act_mean = profile.mean(axis=(1, 3, 5))
        sl = tuple(slice(a, b) for a, b in zip(i0, i1))
        local_c = tuple(c - a for c, a in zip(cv, i0))
        lab = frac >= 0.5
        lab[local_c] = True
        import cc3d  # local: only the generator needs it

        comp = cc3d.connected_components(lab.astype(np.uint8), connectivity=18)
        lab = comp == comp[local_c]
        return sl, lab, frac.astype(np.float32), act_mean.astype(np.float32), local_c

    def place(self, rng, site: str, region: str, volume_ml: float, suvmax: float) -> dict | None:
        """Place one lesion whose measured SUVmax should come out near ``suvmax``: its activity is
        ``suvmax`` over the sphere's recovery coefficient (at most 5x)."""
        cfg = self.cfg
        for attempt in range(32):
            if attempt and attempt % 8 == 0:
                volume_ml = max(cfg.volume_range_ml[0], volume_ml * 0.6)
            uptake = suvmax / max(0.2, _recovery(volume_ml, cfg.pet_fwhm_mm, self.g.spacing))
            centre = self._bone_centre(rng, region) if site == "bone" else self._node_centre(rng, site)
            if centre is None:
                return None
            cv = self.g.voxel(centre)
            if not all(0 <= c < n for c, n in zip(cv, self.g.shape)):
                continue
            ok = self.ok_bone if site == "bone" else self.ok_node
            if not ok[cv] or self.occupied[cv]:
                continue
            blob = self._blob(rng, centre, volume_ml, uptake)
            if blob is None:
                continue
            sl, lab, frac, act_mean, local_c = blob
            if not ok[sl][lab].all() or self.occupied[sl][lab].any():
                continue
            self._paint(rng, site, sl, lab, frac, act_mean)
            centre_voxel = tuple(s.start + c for s, c in zip(sl, local_c))
            rec = {"site": site, "region": region, "sl": sl, "mask": lab, "centre_voxel": centre_voxel,
                   "target_volume_ml": volume_ml, "target_suvmax": suvmax, "uptake_suv": uptake}
            self.placed.append(rec)
            return rec
        return None

    def _paint(self, rng, site, sl, lab, frac, act_mean) -> None:
        act = self.act[sl]
        act[...] = act * (1.0 - frac) + act_mean
        ct = self.ct[sl]
        soft_hu = np.float32(rng.normal(38.0, 6.0))
        if site == "bone":
            bone = np.isin(self.tissue[sl], (TRAB, CORT))
            delta = rng.uniform(150, 500) if rng.random() < self.cfg.sclerotic_fraction else -rng.uniform(40, 150)
            ct[...] = np.where(bone, ct + frac * np.float32(delta), ct * (1 - frac) + frac * soft_hu)
        else:
            ct[...] = ct * (1 - frac) + frac * soft_hu
        self.label[sl][lab] = 1
        pad = ndimage.maximum_filter(lab, size=3, mode="constant")
        self.occupied[sl] |= pad


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


# --------------------------------------------------------------------------------------------
# Patient-level measures (PAPER.md §6.3)


def _dmax_mm(mask: np.ndarray, spacing: Sequence[float]) -> float:
    """Largest Euclidean distance (mm) between two foreground voxel centres; exact."""
    idx = np.argwhere(mask)
    if len(idx) < 2:
        return 0.0
    # Only points extreme along every axis-parallel line can be convex-hull vertices.
    keep = np.ones(len(idx), bool)
    for a in range(3):
        o1, o2 = [b for b in range(3) if b != a]
        order = np.lexsort((idx[:, a], idx[:, o2], idx[:, o1]))
        s = idx[order]
        new = np.ones(len(s), bool)
        new[1:] = (s[1:, o1] != s[:-1, o1]) | (s[1:, o2] != s[:-1, o2])
        last = np.ones(len(s), bool)
        last[:-1] = new[1:]
        extreme = np.zeros(len(idx), bool)
        extreme[order[new | last]] = True
        keep &= extreme
    pts = idx[keep] * np.asarray(spacing, float)
    if len(pts) > 3000:
        try:
            from scipy.spatial import ConvexHull

            pts = pts[ConvexHull(pts).vertices]
        except Exception:  # degenerate (flat) sets: fall back to all candidates
            pass
    best = 0.0
    for start in range(0, len(pts), 1024):
        chunk = pts[start:start + 1024]
        d2 = ((chunk[:, None, :] - pts[None, :, :]) ** 2).sum(-1)
        best = max(best, float(d2.max()))
    return math.sqrt(best)


def label_strata(label: np.ndarray, pet: np.ndarray, spacing: Sequence[float]) -> dict[str, float]:
    """The stratification measures of one case from its label: count (18-connected components),
    TMTV (mL), SUVmax, SUVmean, TLA (SUV*mL) and Dmax (cm)."""
    import cc3d

    fg = label > 0
    vox_ml = float(np.prod(spacing)) / 1000.0
    n = int(cc3d.connected_components(fg.astype(np.uint8), connectivity=18, return_N=True)[1])
    vals = pet[fg]
    return {
        "lesion_count": n,
        "tmtv_ml": round(float(fg.sum()) * vox_ml, 4),
        "suvmax": round(float(vals.max()), 4) if vals.size else 0.0,
        "suvmean": round(float(vals.mean()), 4) if vals.size else 0.0,
        "tla": round(float(vals.astype(np.float64).sum()) * vox_ml, 4),
        "dmax_cm": round(_dmax_mm(fg, spacing) / 10.0, 4),
    }


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


def _write_cohort(root: Path, n_cases: int, seed: int, cfg: SynthConfig, test_fraction: float,
                  progress: Callable[[int, int, str], None] | None) -> dict[str, Any]:
    n_test = _n_test(n_cases, test_fraction)
    draws = [_split_draw(seed, i) for i in range(n_cases)]
    test_idx = set(sorted(range(n_cases), key=lambda i: (draws[i], i))[:n_test])
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir()
    affine = case_affine(cfg)
    width = max(3, len(str(n_cases - 1)))
    cases = []
    for i in range(n_cases):
        case_id = f"{ID_PREFIX}{i:0{width}d}"
        split = "test" if i in test_idx else "train"
        img_dir, lab_dir = ("imagesTs", "labelsTs") if split == "test" else ("imagesTr", "labelsTr")
        case = synthesize(case_id, case_seed(seed, i), cfg)
        files = {
            "CT": f"{img_dir}/{case_id}_0000.nii.gz",
            "PET": f"{img_dir}/{case_id}_0001.nii.gz",
            "label": f"{lab_dir}/{case_id}.nii.gz",
        }
        _write_bytes(root / files["CT"], _nifti_gz(case.ct.astype(np.int16), affine))
        _write_bytes(root / files["PET"], _nifti_gz(case.pet, affine))
        _write_bytes(root / files["label"], _nifti_gz(case.label, affine))
        strata = label_strata(case.label, case.pet, cfg.spacing)
        cases.append({
            "id": case_id, "index": i, "split": split, "seed": int(seed), "seed_spawn_key": [i, 0],
            "disease": case.disease, "lesions_requested": case.lesions_requested, "files": files,
            "strata": strata, "organ_suv": case.organ_suv,
            "lesions": case.lesions,
        })
        if progress is not None:
            progress(i + 1, n_cases, case_id)
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
    held-out cases (``round(n_cases * test_fraction)``, at least 1 when the fraction is > 0, chosen
    by the seed), ``dataset.json`` (nnU-Net v2) and ``manifest.json`` (per case: id, split, seed,
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
