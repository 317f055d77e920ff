"""Paired tests, corrections and effect sizes against scipy / statsmodels and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from lossbench.compare.stats import (
    aggregate,
    correct,
    describe,
    friedman_block,
    min_attainable_p,
    paired_tests,
    rank_biserial,
    wilcoxon_pair,
)

A = np.array([0.81, 0.62, 0.77, 0.90, 0.55, 0.71, 0.68, 0.84, 0.59, 0.73, 0.66, 0.79])
D = np.array([0.11, -0.02, 0.08, 0.09, 0.05, -0.03, 0.13, 0.04, -0.01, 0.12, 0.06, 0.07])  # no ties
B = A - D


# ------------------------------------------------------------------------------------------ Wilcoxon
def test_wilcoxon_without_ties_is_scipys_exact_test():
    row = wilcoxon_pair(A, B, n_boot=0)
    ref = stats.wilcoxon(A, B, method="exact")
    assert row["method"] == "exact"
    assert row["n"] == row["n_nonzero"] == 12
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert row["flag"] == ""
    assert row["mean_diff"] == pytest.approx(np.mean(A - B))
    assert row["median_diff"] == pytest.approx(np.median(A - B))


def test_wilcoxon_with_zeros_and_ties_is_exact_up_to_500_pairs():
    # 40 pairs with ties and zeros: the exact conditional p (shift algorithm), close to the normal one here
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, 40).astype(float)
    b = a + rng.choice([-2.0, -1.0, 0.0, 0.0, 1.0, 2.0, 3.0], 40)
    row = wilcoxon_pair(a, b, n_boot=0)
    ref = stats.wilcoxon(a, b, zero_method="wilcox", method="asymptotic", correction=False)
    assert row["method"] == "exact"
    assert row["n"] == 40 and row["n_nonzero"] == int(np.sum(a != b))
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue, rel=0.15)


def test_wilcoxon_with_ties_and_few_pairs_is_the_exact_permutation_test():
    d = np.array([1.0, 1.0, 2.0, 2.0, 3.0, -1.0, 4.0, 2.0, 0.0, 5.0, -2.0])
    row = wilcoxon_pair(d, np.zeros_like(d), n_boot=0)
    nz = d[d != 0]
    ref = stats.wilcoxon(nz, method=stats.PermutationMethod())
    assert row["method"] == "exact"
    assert row["n"] == 11 and row["n_nonzero"] == 10
    assert row["p"] == pytest.approx(ref.pvalue, rel=1e-12)
    assert row["statistic"] == pytest.approx(ref.statistic)


def test_six_pairs_of_one_sign_give_the_smallest_attainable_p():
    row = wilcoxon_pair(np.arange(1.0, 7.0), np.zeros(6), n_boot=0)
    assert row["flag"] == ""
    assert row["p"] == pytest.approx(2 / 2**6)
    assert row["rank_biserial"] == 1.0


def test_too_few_pairs_are_flagged_not_tested():
    row = wilcoxon_pair(np.arange(1.0, 6.0), np.zeros(5), n_boot=0)  # 5 pairs < 6
    assert math.isnan(row["p"]) and row["flag"].startswith("too few pairs")
    # allowed by min_pairs, but 2 / 2**5 = 0.0625 > 0.05 can never be significant
    row = wilcoxon_pair(np.arange(1.0, 6.0), np.zeros(5), n_boot=0, min_pairs=1)
    assert math.isnan(row["p"]) and "smallest attainable p = 0.0625" in row["flag"]
    # 8 pairs, but only 5 differ
    row = wilcoxon_pair([1, 2, 3, 4, 5, 0, 0, 0], np.zeros(8), n_boot=0)
    assert math.isnan(row["p"]) and row["n"] == 8 and row["n_nonzero"] == 5
    assert "too few non-zero differences" in row["flag"]
    # with alpha = 0.1 five non-zero differences suffice
    row = wilcoxon_pair([1, 2, 3, 4, 5, 0, 0, 0], np.zeros(8), n_boot=0, alpha=0.1)
    assert row["p"] == pytest.approx(2 / 2**5)


def test_min_attainable_p():
    assert min_attainable_p(0) == 1.0
    assert min_attainable_p(5) == pytest.approx(0.0625)
    assert min_attainable_p(6) == pytest.approx(0.03125)


def test_nan_pairs_are_dropped_and_float_noise_is_not_a_difference():
    a = np.array([0.1 + 0.2, 1.0, np.nan, 2.0])
    b = np.array([0.3, 0.5, 1.0, np.nan])
    row = wilcoxon_pair(a, b, n_boot=0, min_pairs=1, alpha=0.9)
    assert row["n"] == 2 and row["n_nonzero"] == 1


def test_rank_biserial_by_hand():
    # |d| ranks 1, 2, 3, 4; T+ = 1 + 3 + 4 = 8, T- = 2 -> (8 - 2) / 10
    assert rank_biserial([1.0, -2.0, 3.0, 4.0]) == pytest.approx(0.6)
    assert rank_biserial([0.0, 1.0, -2.0, 3.0, 4.0]) == pytest.approx(0.6)  # zeros dropped
    # ties: ranks 1.5, 1.5, 3; T+ = 1.5 + 3, T- = 1.5 -> 3 / 6
    assert rank_biserial([1.0, -1.0, 2.0]) == pytest.approx(0.5)
    assert math.isnan(rank_biserial([0.0, 0.0]))
    # relation to scipy's statistic min(T+, T-) with S = n(n + 1)/2
    d = A - B
    t = stats.wilcoxon(d).statistic
    s = len(d) * (len(d) + 1) / 2
    assert abs(rank_biserial(d)) == pytest.approx(1 - 2 * t / s)


def test_effect_is_the_hodges_lehmann_estimate_with_the_exact_inverted_ci():
    row = wilcoxon_pair(A, B)
    d = A - B
    walsh = [(d[i] + d[j]) / 2 for i in range(len(d)) for j in range(i, len(d))]
    assert row["estimate"] == pytest.approx(np.median(walsh))
    assert row["ci_low"] < row["estimate"] < row["ci_high"]
    # inversion: shifting d by a CI end keeps the exact test at p > 0.05 just inside, p <= 0.05 just outside
    for end, inside in ((row["ci_low"], 1e-9), (row["ci_high"], -1e-9)):
        assert stats.wilcoxon(d - (end + inside), method="exact").pvalue > 0.05
        assert stats.wilcoxon(d - (end - inside), method="exact").pvalue <= 0.05


# ------------------------------------------------------------------------------------------ Friedman
def test_friedman_is_scipys_with_kendalls_w():
    rng = np.random.default_rng(1)
    block = rng.normal(size=(15, 4)) + np.array([0.0, 0.3, 0.6, 0.1])
    row = friedman_block(block)
    ref = stats.friedmanchisquare(*block.T)
    assert row["statistic"] == pytest.approx(ref.statistic)
    assert row["p"] == pytest.approx(ref.pvalue)
    assert row["kendall_w"] == pytest.approx(ref.statistic / (15 * 3))


def test_friedman_flags():
    assert friedman_block(np.ones((10, 3)))["flag"] == "every case ties all losses"
    assert friedman_block(np.random.default_rng(0).normal(size=(4, 3)))["flag"].startswith("too few complete")
    assert "3 losses" in friedman_block(np.zeros((10, 2)))["flag"]


# ------------------------------------------------------------------------------------------ correction
@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
def test_correction_is_multipletests_over_the_tested_rows_only(method):
    p = np.array([0.001, np.nan, 0.02, 0.04, np.nan, 0.3, 0.011])
    tests = pd.DataFrame({"p": p, "flag": ["" if not math.isnan(v) else "too few" for v in p]})
    out = correct(tests, method=method, alpha=0.05)
    reject, adjusted, _, _ = multipletests(p[~np.isnan(p)], alpha=0.05, method=method)
    np.testing.assert_allclose(out.loc[~np.isnan(p), "p_adjusted"], adjusted)
    assert list(out.loc[~np.isnan(p), "significant"]) == list(reject)
    assert out.loc[np.isnan(p), "p_adjusted"].isna().all()
    assert not out.loc[np.isnan(p), "significant"].any()


# ------------------------------------------------------------------------------------------ tables
def _table(n: int, losses: dict[str, float], *, seed: int = 0, seeds: int = 1, noise: float = 0.05) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    case = rng.normal(0.6, 0.1, n)  # cases differ a lot; losses differ by their shift only
    stratum = np.where(np.arange(n) < 4, "small", "large")  # a 4-case stratum level
    rows = []
    for loss, shift in losses.items():
        for s in range(seeds):
            rows.append(pd.DataFrame({
                "network": "attunet", "loss": loss, "seed": s, "case_id": [f"c{i}" for i in range(n)],
                "dice": case + shift + rng.normal(0, noise, n), "fp": rng.poisson(2, n).astype(float),
                "stratum_count": stratum,
            }))
    return pd.concat(rows, ignore_index=True)


def test_aggregate_averages_replicates_per_unit_and_skips_nan():
    df = pd.DataFrame({"network": "n", "loss": "a", "case_id": ["x", "x", "y", "y"], "seed": [0, 1, 0, 1],
                       "dice": [0.2, 0.4, np.nan, 0.9]})
    out = aggregate(df, ["dice"], by=["network"], unit=["case_id"])
    assert list(out["dice"]) == pytest.approx([0.3, 0.9])
    assert list(out["n_rows"]) == [2, 2]
    each = aggregate(df, ["dice"], by=["network"], unit=["case_id", "seed"])
    assert len(each) == 4


def test_planted_effect_is_found_and_the_null_pair_is_not():
    df = _table(30, {"dl": 0.0, "dfl": 0.0, "l1dfl": 0.08}, seed=11, seeds=3)
    tests = paired_tests(df, ["dice"], strata={"count": "stratum_count"}, correction="holm", n_boot=200)
    wil = tests[(tests["test"] == "wilcoxon") & (tests["stratum"] == "all")].set_index(["loss_a", "loss_b"])
    assert wil.loc[("dfl", "l1dfl"), "significant"] and wil.loc[("dl", "l1dfl"), "significant"]
    assert wil.loc[("dfl", "l1dfl"), "median_diff"] < 0 < wil.loc[("dfl", "l1dfl"), "p_adjusted"]
    assert wil.loc[("dfl", "l1dfl"), "ci_high"] < 0
    assert not wil.loc[("dfl", "dl"), "significant"]
    assert wil.loc[("dfl", "l1dfl"), "n"] == 30  # seeds averaged: one pair per case
    fried = tests[(tests["test"] == "friedman") & (tests["stratum"] == "all")]
    assert len(fried) == 1 and fried["significant"].item()
    # seeds kept apart: one pair per (case, seed)
    each = paired_tests(df, ["dice"], unit=["case_id", "seed"], n_boot=0, friedman=False)
    assert set(each["n"]) == {90}


def test_small_strata_are_flagged_and_left_out_of_the_family():
    df = _table(30, {"dl": 0.0, "l1dfl": 0.05}, seed=2)
    tests = paired_tests(df, ["dice", "fp"], strata={"count": "stratum_count"}, correction="bonferroni", n_boot=0)
    small = tests[tests["level"] == "small"]
    assert len(small) == 2 and (small["n"] == 4).all()
    assert small["p"].isna().all() and small["p_adjusted"].isna().all() and not small["significant"].any()
    assert small["flag"].str.startswith("too few pairs").all()
    tested = tests[tests["p"].notna()]
    assert len(tested) == 4  # all + large, two metrics
    np.testing.assert_allclose(tested["p_adjusted"], np.minimum(tested["p"] * 4, 1.0))


def test_baseline_comparisons_put_the_baseline_first():
    df = _table(20, {"dl": 0.0, "dfl": 0.0, "l1dfl": 0.05}, seed=4)
    tests = paired_tests(df, ["dice"], baseline="l1dfl", n_boot=0, friedman=False)
    assert set(zip(tests["loss_a"], tests["loss_b"], strict=True)) == {("l1dfl", "dfl"), ("l1dfl", "dl")}
    assert (tests["mean_diff"] > 0).all()


def test_describe_matches_numpy():
    df = _table(20, {"dl": 0.0, "l1dfl": 0.05}, seed=5)
    units = aggregate(df, ["dice"], by=["network"], unit=["case_id"], carry=["stratum_count"])
    out = describe(units, ["dice"], by=["network"], strata={"count": "stratum_count"})
    row = out[(out["loss"] == "dl") & (out["stratum"] == "all")].iloc[0]
    vals = units.loc[units["loss"] == "dl", "dice"].to_numpy()
    assert row["n"] == 20 and row["mean"] == pytest.approx(vals.mean())
    assert row["sd"] == pytest.approx(vals.std(ddof=1)) and row["median"] == pytest.approx(np.median(vals))
    assert set(out["level"]) == {"all", "small", "large"}


# ------------------------------------------------------------------------------------------ error rate
def test_corrected_family_keeps_its_family_wise_error_rate_and_uncorrected_does_not(monkeypatch):
    """200 null tables × a family of 12 tests (4 equal losses: 6 pairs × 2 metrics).

    Holm and Bonferroni must reject anything in at most alpha of the tables (plus three binomial
    standard errors); testing each at alpha without correction must exceed that bound, which shows
    the check can fail.
    """
    import gc

    monkeypatch.setattr(gc, "collect", lambda *args, **kwargs: 0)  # statsmodels' Holm runs gc.collect() per call
    rng = np.random.default_rng(20240611)
    alpha, n_tables = 0.05, 200
    bound = alpha + 3 * math.sqrt(alpha * (1 - alpha) / n_tables)
    any_reject = {"holm": 0, "bonferroni": 0, "fdr_bh": 0, "uncorrected": 0}
    for _ in range(n_tables):
        n = 20
        case = rng.normal(0.6, 0.1, n)
        df = pd.concat([pd.DataFrame({"loss": loss, "case_id": np.arange(n), "dice": case + rng.normal(0, 0.05, n),
                                      "fp_volume_ml": rng.gamma(2.0, 1.0, n) + 5 * case})
                        for loss in ("a", "b", "c", "d")])
        tests = paired_tests(df, ["dice", "fp_volume_ml"], by=(), correction="holm", n_boot=0, friedman=False)
        assert len(tests) == 12 and tests["p"].notna().all()
        any_reject["holm"] += bool(tests["significant"].any())
        for method in ("bonferroni", "fdr_bh"):
            any_reject[method] += bool(correct(tests, method=method, alpha=alpha)["significant"].any())
        any_reject["uncorrected"] += bool((tests["p"] <= alpha).any())
    rate = {k: v / n_tables for k, v in any_reject.items()}
    assert rate["holm"] <= bound, rate
    assert rate["bonferroni"] <= bound, rate
    assert rate["fdr_bh"] <= bound, rate  # under the global null the FDR is the FWER
    assert rate["uncorrected"] > bound, rate
