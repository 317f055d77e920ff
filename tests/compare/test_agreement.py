"""Agreement statistics: CCC, Bland–Altman, TOST, CP / TDI against hand computations and scipy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from lossbench.compare.agreement import (
    agreement_table,
    bland_altman,
    ccc,
    ccc_ci,
    coverage_probability,
    tdi,
    tost,
)


def test_ccc_by_hand():
    # x = 1..5, y = 2, 3, 3, 5, 6: means 3 and 3.8; s_x² = 10/5 = 2, s_y² = 10.8/5 = 2.16,
    # s_xy = 10/5 = 2, (x̄ - ȳ)² = 0.64 -> 2·2 / (2 + 2.16 + 0.64) = 4 / 4.8
    assert ccc([1, 2, 3, 4, 5], [2, 3, 3, 5, 6]) == pytest.approx(5 / 6)
    # a pure shift by 1: 2·2 / (2 + 2 + 1)
    assert ccc([1, 2, 3, 4, 5], [2, 3, 4, 5, 6]) == pytest.approx(0.8)
    assert ccc([1, 2, 3, 4, 5], [1, 2, 3, 4, 5]) == pytest.approx(1.0)
    assert ccc([-2, -1, 0, 1, 2], [2, 1, 0, -1, -2]) == pytest.approx(-1.0)
    assert math.isnan(ccc([1, 1, 1], [1, 1, 1]))
    assert ccc([1, 2, np.nan, 4], [1, 2, 3, 4]) == pytest.approx(1.0)  # NaN pairs dropped


def test_ccc_is_pearson_times_the_bias_correction_factor():
    rng = np.random.default_rng(0)
    x = rng.normal(10, 2, 50)
    y = 0.8 * x + 3 + rng.normal(0, 1, 50)
    r = stats.pearsonr(x, y).statistic
    sx, sy = x.std(), y.std()
    v = sx / sy
    u = (x.mean() - y.mean()) / math.sqrt(sx * sy)
    cb = 2 / (v + 1 / v + u**2)  # Lin 1989: ρc = r · C_b
    assert ccc(x, y) == pytest.approx(r * cb)


def test_ccc_confidence_interval_covers_the_true_value():
    # X ~ N(0, 1), Y = 0.9 X + 0.3 + N(0, 0.4²): σ_xy = 0.9, σ_y² = 0.97, bias 0.3
    true = 2 * 0.9 / (1 + 0.97 + 0.3**2)
    rng = np.random.default_rng(42)
    hits, sims = 0, 400
    for _ in range(sims):
        x = rng.normal(0, 1, 40)
        y = 0.9 * x + 0.3 + rng.normal(0, 0.4, 40)
        rc, lo, hi = ccc_ci(x, y, 0.95)
        assert lo < rc < hi
        hits += lo <= true <= hi
    assert 0.91 <= hits / sims <= 0.98


def test_bland_altman_by_hand():
    gt = [1.0, 2.0, 3.0, 4.0]
    pred = [1.5, 2.5, 2.5, 5.0]  # d = 0.5, 0.5, -0.5, 1.0
    ba = bland_altman(gt, pred)
    sd = math.sqrt((0.125**2 + 0.125**2 + 0.875**2 + 0.625**2) / 3)
    assert ba["bias"] == pytest.approx(0.375)
    assert ba["sd"] == pytest.approx(sd)
    assert ba["loa_low"] == pytest.approx(0.375 - 1.959964 * sd, rel=1e-6)
    assert ba["loa_high"] == pytest.approx(0.375 + 1.959964 * sd, rel=1e-6)


def test_tost_equals_two_one_sided_t_tests_and_decides_equivalence():
    rng = np.random.default_rng(7)
    gt = rng.uniform(5, 15, 40)
    close = gt + rng.normal(0.1, 0.5, 40)  # bias ~0.1, margin 20 % of ~10 = ~2
    margin = 0.2 * gt.mean()
    p, p_low, p_upp = tost(gt, close, margin)
    d = close - gt
    assert p_low == pytest.approx(stats.ttest_1samp(d, -margin, alternative="greater").pvalue)
    assert p_upp == pytest.approx(stats.ttest_1samp(d, margin, alternative="less").pvalue)
    assert p == max(p_low, p_upp) and p < 1e-6  # equivalent

    far = gt * 1.5 + rng.normal(0, 0.5, 40)  # +50 %: outside ±20 %
    p, p_low, p_upp = tost(gt, far, margin)
    assert p > 0.99 and p_upp == p

    # a bias just inside the margin but with few noisy cases cannot be shown equivalent
    noisy = gt[:8] + margin * 0.8 + rng.normal(0, 3, 8)
    assert tost(gt[:8], noisy, margin)[0] > 0.05


def test_tost_without_spread_is_decided_by_the_bias():
    gt = np.array([1.0, 2.0, 3.0])
    assert tost(gt, gt + 0.1, 0.5)[0] == 0.0
    assert tost(gt, gt + 0.6, 0.5)[0] == 1.0


def test_coverage_probability_and_tdi():
    assert coverage_probability(0.0, 1.0, 1.959964) == pytest.approx(0.95, abs=1e-6)
    assert tdi(0.0, 1.0, 0.90) == pytest.approx(stats.norm.ppf(0.95))
    for bias, sd in ((0.5, 2.0), (-3.0, 1.0), (0.0, 0.1)):
        delta = tdi(bias, sd, 0.9)
        assert coverage_probability(bias, sd, delta) == pytest.approx(0.9, abs=1e-9)
    assert coverage_probability(0.2, 0.0, 0.5) == 1.0 and tdi(0.2, 0.0) == 0.2


def test_agreement_table_margins_flags_and_correction():
    rng = np.random.default_rng(3)
    n = 30
    rows = []
    for loss, scale in (("good", 1.0), ("bad", 1.6)):
        gt = rng.uniform(5, 20, n)
        rows.append(pd.DataFrame({
            "network": "attunet", "loss": loss, "case_id": [f"c{i}" for i in range(n)],
            "gt_suvmax": gt, "pred_suvmax": gt * scale + rng.normal(0, 0.5, n),
            "gt_lesion_count": np.zeros(n), "pred_lesion_count": rng.integers(0, 2, n).astype(float),
        }))
    df = pd.concat(rows, ignore_index=True)
    table = agreement_table(df, ["suvmax", "lesion_count"], margin=0.2, correction="holm")
    t = table.set_index(["loss", "biomarker"])
    good = t.loc[("good", "suvmax")]
    gt = df.loc[df["loss"] == "good", "gt_suvmax"]
    assert good["margin"] == pytest.approx(0.2 * gt.mean())
    assert good["equivalent"] and good["ccc"] > 0.95
    assert good["ccc"] == pytest.approx(ccc(gt, df.loc[df["loss"] == "good", "pred_suvmax"]))
    assert not t.loc[("bad", "suvmax"), "equivalent"]
    zero = t.loc[("good", "lesion_count")]
    assert zero["flag"].startswith("GT mean is 0") and math.isnan(zero["tost_p"]) and not zero["equivalent"]
    tested = table["tost_p"].notna()
    assert tested.sum() == 2
    expected = multipletests(table.loc[tested, "tost_p"], alpha=0.05, method="holm")[1]
    np.testing.assert_allclose(table.loc[tested, "tost_p_adjusted"], expected)
    small = agreement_table(df[df["case_id"].isin(["c0", "c1", "c2"])], ["suvmax"])
    assert small["flag"].str.startswith("too few cases").all() and small["tost_p"].isna().all()
