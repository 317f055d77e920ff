"""The phantom's anatomy: the voxel grid, the tissue painter, the per-patient draws and the
body, organs, bowel, skeleton and texture painted into a tissue map (docs/synthetic-cohort.md,
"Anatomy")."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from .config import BONE_REGIONS, SynthConfig, case_affine

# --------------------------------------------------------------------------------------------
# Tissues

TISSUES = (
    "air", "lung", "fat", "soft tissue", "liver", "spleen", "kidney", "bladder", "bowel", "heart",
    "aorta", "airway", "brain", "parotid", "submandibular", "lacrimal", "trabecular bone", "cortical bone",
)
(AIR, LUNG, FAT, SOFT, LIVER, SPLEEN, KIDNEY, BLADDER, BOWEL, HEART, AORTA, AIRWAY, BRAIN,
 PAROTID, SUBMAND, LACRIMAL, TRAB, CORT) = range(len(TISSUES))

_REGION_CODE = {name: i + 1 for i, name in enumerate(BONE_REGIONS)}


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
