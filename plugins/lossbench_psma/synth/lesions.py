"""Lesions: the per-patient count, the recovery coefficient and the painter that places each lesion
into the tissue map, CT, activity and label (docs/synthetic-cohort.md, "Lesions")."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from .anatomy import (_REGION_CODE, BLADDER, BOWEL, CORT, FAT, KIDNEY, LACRIMAL, LIVER, PAROTID, SOFT, SPLEEN,
                      SUBMAND, TRAB, _Grid, _Patient)
from .config import SynthConfig

#: Organs with high physiological uptake, kept clear of lesions (they would hide them).
_HOT = (KIDNEY, BLADDER, LIVER, SPLEEN, BOWEL, PAROTID, SUBMAND, LACRIMAL)
_NODE_OK = (SOFT, FAT)
_BONE_OK = (SOFT, FAT, TRAB, CORT)


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    q /= np.linalg.norm(q)
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


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
