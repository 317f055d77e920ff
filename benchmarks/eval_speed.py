"""Speed of ``evaluate_case`` against a straightforward implementation of the reference approach.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/eval_speed.py [--shape 200 200 300] [--lesions 30] [--repeats 5]

The case is synthetic and whole-body sized (200 × 200 × 300 voxels of 4 mm by default) with ~30 GT
lesions of radii 1–10 voxels and a prediction that is right on most of them, too small or too large on
some, misses a few and adds FP blobs. Both implementations run on one core (BLAS/OpenMP threads are
pinned to 1 before NumPy is imported).

The baseline follows the reference code's method (PAPER.md §6): ``cc3d`` labels, then full-volume
boolean masks per component: an IoU loop over every (predicted, GT) component pair for criteria 2 and
3 (each criterion computed on its own, as the reference's function is called once per criterion), the
argmax of PET × lesion mask over the whole volume, per-component loops for FP/FN volume and TLA, and
Dmax as the maximum of the pairwise distances of all foreground voxels. Its masks are ``bool`` rather
than the reference's ``int64`` ``np.where`` arrays, which makes it faster than the reference, not slower.

The pairwise Dmax of all foreground voxels needs n(n-1)/2 distances. ``scipy.spatial.distance.pdist``
computes them directly while they fit in ``--pdist-max-gib`` (2 GiB: n up to about 23,000 voxels);
beyond that it is timed on random subsamples of m voxels and **extrapolated** as
t(n) = t(m) · (n / m)², which the output says, with the measured times at two subsample sizes so that
the quadratic scaling can be checked. (The reference's own (n, n, 3) broadcast would need ~24 n² bytes.)
``evaluate_case`` also builds the
per-lesion table, which the baseline does not.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402

import cc3d  # noqa: E402
import numpy as np  # noqa: E402
from scipy.spatial.distance import pdist  # noqa: E402

from lossbench.evaluation import dmax_mm, evaluate_case, reference  # noqa: E402

SPACING = (4.0, 4.0, 4.0)


# ------------------------------------------------------------------------------------ synthetic case


def _ball(mask: np.ndarray, centre, radii) -> None:
    lo = [max(0, int(c - r - 1)) for c, r in zip(centre, radii, strict=True)]
    hi = [min(s, int(c + r + 2)) for c, r, s in zip(centre, radii, mask.shape, strict=True)]
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    inside = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True)) <= 1.0
    mask[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))] |= inside


def make_case(shape: tuple[int, int, int], n_lesions: int, n_fp: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    pet = rng.gamma(4.0, 0.25, size=shape)  # background SUV ~ 1 with noise
    margin = 14
    for k in range(n_lesions):
        centre = [rng.uniform(margin, s - margin) for s in shape]
        radius = float(rng.choice([1.2, 1.8, 2.5, 3.5, 5.0, 7.0, 10.0]))
        radii = [radius * rng.uniform(0.7, 1.3) for _ in range(3)]
        _ball(gt, centre, radii)
        # Uptake: a hot core inside the lesion.
        peak = rng.uniform(5.0, 40.0)
        _ball_values(pet, centre, radii, peak)
        fate = k % 6
        if fate == 0:
            continue  # missed
        if fate == 1:  # too small and off-centre: often misses the hottest voxel
            shift = [c + r * 0.5 for c, r in zip(centre, radii, strict=True)]
            _ball(pred, shift, [r * 0.45 for r in radii])
        elif fate == 2:  # too large
            _ball(pred, centre, [r * 1.3 + 0.5 for r in radii])
        else:  # about right, slightly shifted
            _ball(pred, [c + rng.uniform(-0.7, 0.7) for c in centre], radii)
    for _ in range(n_fp):  # false-positive blobs (e.g. kidneys, bladder, bowel)
        centre = [rng.uniform(margin, s - margin) for s in shape]
        _ball(pred, centre, [rng.uniform(1.0, 6.0) for _ in range(3)])
    return pred.astype(np.uint8), gt.astype(np.uint8), pet


def _ball_values(pet: np.ndarray, centre, radii, peak: float) -> None:
    lo = [max(0, int(c - r - 1)) for c, r in zip(centre, radii, strict=True)]
    hi = [min(s, int(c + r + 2)) for c, r, s in zip(centre, radii, pet.shape, strict=True)]
    grids = np.ogrid[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    d2 = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii, strict=True))
    region = pet[tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))]
    np.maximum(region, peak * np.exp(-2.0 * d2), out=region)


# ------------------------------------------------------------------------------- baseline (reference)


def baseline_case(pred, gt, pet, spacing, dmax_sample: int, pdist_max_gib: float, rng) -> tuple[dict, dict]:
    """Per-case metrics the reference way; returns (values, dmax timing info)."""
    voxel_ml = float(np.prod(spacing)) / 1000
    out: dict[str, float] = {}
    out["dice"] = 2.0 * np.sum(pred[gt == 1]) / (np.sum(gt) + np.sum(pred))
    for k in (1, 2, 3):
        out[f"tp_c{k}"], out[f"fp_c{k}"], out[f"fn_c{k}"] = reference.detection(pred, gt, pet, k)
    pl, npr = cc3d.connected_components(pred, connectivity=18, return_N=True)
    gl, ng = cc3d.connected_components(gt, connectivity=18, return_N=True)
    out["fp_volume_ml"], out["fn_volume_ml"] = reference.fp_fn_volume(pred, gt, spacing)
    dmax_info = {}
    for who, mask, lab, n in (("gt", gt, gl, ng), ("pred", pred, pl, npr)):
        prod = pet * mask
        nvox = int(mask.sum())
        out[f"{who}_suvmax"] = float(prod.max())
        out[f"{who}_suvmean"] = float(prod.sum() / nvox)
        out[f"{who}_tmtv_ml"] = nvox * voxel_ml
        tla = 0.0
        for c in range(1, n + 1):
            comp = lab == c
            tla += float(pet[comp].mean()) * int(comp.sum()) * voxel_ml
        out[f"{who}_tla"] = tla
        out[f"{who}_lesion_count"] = n
        # Dmax: pairwise distances of all foreground voxels; on subsamples, extrapolated, when the
        # n(n-1)/2 distances would not fit in `pdist_max_gib`.
        idx = np.argwhere(mask)
        coords = idx * np.asarray(spacing)
        n_vox = len(idx)
        if n_vox * (n_vox - 1) / 2 * 8 <= pdist_max_gib * 2**30:
            t0, c0 = time.perf_counter(), time.process_time()
            full = float(pdist(coords).max())
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
            dmax_info[who] = {"n": n_vox, "times": {n_vox: elapsed}, "cpu": {n_vox: cpu}, "seconds": elapsed,
                              "cpu_seconds": cpu,
                              "extrapolated": False, "points": idx, "dmax": full}
            continue
        times, cpus = {}, {}
        for m in (dmax_sample // 2, dmax_sample):
            sub = idx[rng.choice(n_vox, size=min(m, n_vox), replace=False)]
            t0, c0 = time.perf_counter(), time.process_time()
            sub_dmax = float(pdist(sub * np.asarray(spacing)).max())
            times[m], cpus[m] = time.perf_counter() - t0, time.process_time() - c0
        scale = (n_vox / dmax_sample) ** 2
        dmax_info[who] = {"n": n_vox, "times": times, "cpu": cpus, "seconds": times[dmax_sample] * scale,
                          "cpu_seconds": cpus[dmax_sample] * scale,
                          "extrapolated": True, "points": sub, "dmax": sub_dmax}
    return out, dmax_info


# ------------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(200, 200, 300))
    ap.add_argument("--lesions", type=int, default=30)
    ap.add_argument("--fp-blobs", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5, help="runs of evaluate_case (the best is reported)")
    ap.add_argument("--dmax-sample", type=int, default=6000,
                    help="voxels per subsample for an extrapolated baseline Dmax")
    ap.add_argument("--pdist-max-gib", type=float, default=2.0,
                    help="largest pdist output (GiB) measured directly; beyond it the baseline Dmax is extrapolated")
    ns = ap.parse_args()

    shape = tuple(ns.shape)
    pred, gt, pet = make_case(shape, ns.lesions, ns.fp_blobs)
    print(f"CPU: {cpu_model()}; threads pinned: OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"case: {shape[0]}x{shape[1]}x{shape[2]} voxels of {SPACING} mm; "
          f"GT voxels {int(gt.sum())}, predicted voxels {int(pred.sum())}")

    evaluate_case(pred, gt, pet, SPACING)  # warm-up (imports, caches)
    ours, ours_cpu = [], []
    for _ in range(ns.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        res = evaluate_case(pred, gt, pet, SPACING)
        ours.append(time.perf_counter() - t0)
        ours_cpu.append(time.process_time() - c0)
    t_ours, c_ours = min(ours), min(ours_cpu)
    case = res.case
    print(f"GT lesions {case['gt_lesion_count']}, predicted components {case['pred_lesion_count']}; "
          f"criterion 3: TP {case['tp_c3']} FP {case['fp_c3']} FN {case['fn_c3']}")

    rng = np.random.default_rng(1)
    t0, c0 = time.perf_counter(), time.process_time()
    base, dmax_info = baseline_case(pred, gt, pet, SPACING, ns.dmax_sample, ns.pdist_max_gib, rng)
    t_base_measured = time.perf_counter() - t0 - sum(sum(d["times"].values()) for d in dmax_info.values())
    c_base_measured = time.process_time() - c0 - sum(sum(d["cpu"].values()) for d in dmax_info.values())
    t_base = t_base_measured + sum(d["seconds"] for d in dmax_info.values())
    c_base = c_base_measured + sum(d["cpu_seconds"] for d in dmax_info.values())

    # Agreement of everything; Dmax on the voxels the baseline used (all, or its subsample).
    mismatches = []
    for key, value in base.items():
        mine = case[key]
        same = mine == value if isinstance(value, int) else np.isclose(mine, value, rtol=1e-9, atol=1e-12)
        if not same:
            mismatches.append(f"{key}: ours {mine} vs baseline {value}")
    for who, info in dmax_info.items():
        mine = dmax_mm(info["points"], SPACING)
        if not np.isclose(mine, info["dmax"], rtol=1e-12):
            mismatches.append(f"{who} Dmax on {len(info['points'])} voxels: ours {mine} vs pdist {info['dmax']}")
        if not info["extrapolated"] and not np.isclose(case[f"{who}_dmax_cm"] * 10, info["dmax"], rtol=1e-12):
            mismatches.append(f"{who} Dmax: evaluate_case {case[f'{who}_dmax_cm'] * 10} mm vs pdist {info['dmax']} mm")

    print()
    print(f"{'implementation':<58}{'wall (s)':>10}{'CPU (s)':>10}")
    print(f"{'evaluate_case (best of ' + str(ns.repeats) + ', per-lesion table included)':<58}"
          f"{t_ours:>10.3f}{c_ours:>10.3f}")
    print(f"{'baseline without Dmax (measured once)':<58}{t_base_measured:>10.1f}{c_base_measured:>10.1f}")
    for who, info in dmax_info.items():
        if info["extrapolated"]:
            ms = ", ".join(f"m={m}: {t:.2f} s" for m, t in info["times"].items())
            label = f"baseline {who} Dmax, pdist of n={info['n']} voxels (EXTRAPOLATED)"
            print(f"{label:<58}{info['seconds']:>10.1f}{info['cpu_seconds']:>10.1f}"
                  f"   [wall on m-voxel subsamples: {ms}; x (n/m)^2]")
        else:
            label = f"baseline {who} Dmax, pdist of all n={info['n']} voxels (measured)"
            print(f"{label:<58}{info['seconds']:>10.1f}{info['cpu_seconds']:>10.1f}")
    extrap = any(d["extrapolated"] for d in dmax_info.values())
    print(f"{'baseline total' + (' (with extrapolated Dmax)' if extrap else ''):<58}{t_base:>10.1f}{c_base:>10.1f}")
    print()
    print(f"speed-up without Dmax (both measured): {t_base_measured / t_ours:,.0f}x wall, "
          f"{c_base_measured / c_ours:,.0f}x CPU")
    print(f"speed-up with the pairwise Dmax{' (extrapolated)' if extrap else ''}: {t_base / t_ours:,.0f}x wall, "
          f"{c_base / c_ours:,.0f}x CPU")
    # Judged on measured times only: the whole baseline when its Dmax was measured, else without Dmax.
    ratio = c_base_measured / c_ours if extrap else c_base / c_ours
    print(f"goals: >= 50x faster ({ratio:,.0f}x CPU, measured): {'met' if ratio >= 50 else 'NOT met'}; "
          f"< 1 s on one core: {'met' if t_ours < 1.0 else 'NOT met'}")
    print("agreement (Dice, TP/FP/FN c1-c3, FP/FN volumes, SUVmax/mean, TMTV, TLA, counts, Dmax): "
          + ("all equal" if not mismatches else "MISMATCH: " + "; ".join(mismatches)))


if __name__ == "__main__":
    main()
