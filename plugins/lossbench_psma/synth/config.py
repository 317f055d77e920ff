"""The generator's parameters (:class:`SynthConfig`), the case seeds and the grid's affine.

What the defaults mean is specified in docs/synthetic-cohort.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lossbench.errors import ParameterError

#: Bumped whenever a change alters the generated data; part of the default cohort's cache key.
GENERATOR_VERSION = "2"  # 2: pelvis-to-lung-bases default field of view; stratified (count, TMTV) test set

#: A CPU-sized field of view: upper thighs to the lung bases (51.2 cm), which holds the physiological
#: uptake that makes PSMA hard (kidneys, bladder, bowel, liver, spleen) and most lesion sites.
#: ``WHOLE_BODY_SHAPE`` (to the orbits, with the salivary and lacrimal glands) is ``--shape 112,80,224``.
DEFAULT_SHAPE = (112, 80, 128)
WHOLE_BODY_SHAPE = (112, 80, 224)
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
    """Every knob of the phantom generator; docs/synthetic-cohort.md explains the defaults.

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
