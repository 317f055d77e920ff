"""The calibrated design: exact tests, the primary two-way test, families, post-hoc, agreement, report."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lossbench.compare.agreement import agreement_table, bland_altman, loa_ci
from lossbench.compare.analysis import compare_cases
from lossbench.compare.report import headline, public_uri, write_report
from lossbench.compare.simulate import Scenario, dice_tables, evaluate, stratum_labels
from lossbench.compare.stats import (
    conover,
    hodges_lehmann,
    nemenyi,
    nemenyi_cd,
    signed_rank_exact,
    tarone_select,
    twoway_pair,
)


# ------------------------------------------------------------------------------------------ exact tests
def test_exact_signed_rank_with_ties_is_the_issues_known_answer():
    d = np.array([1, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7], dtype=float)
    assert signed_rank_exact(d)[1] == pytest.approx(2 / 2**14)  # 0.000122; the normal approximation gives 0.00096
    normal = stats.wilcoxon(d, method="asymptotic", correction=False).pvalue
    assert normal > 5 * signed_rank_exact(d)[1]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_signed_rank_equals_full_enumeration_of_sign_flips(seed):
    rng = np.random.default_rng(seed)
    d = rng.choice([-3.0, -1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 4.0], size=12)
    ref = stats.wilcoxon(d, method=stats.PermutationMethod(n_resamples=np.inf))
    t, p = signed_rank_exact(d)
    assert p == pytest.approx(ref.pvalue, rel=1e-12) and t == pytest.approx(ref.statistic)


def test_hodges_lehmann_ci_of_a_known_sample():
    # n = 10: the exact untied null gives P(T+ <= 8) = 0.0244 <= 0.025 < P(T+ <= 9): k = 9
    d = np.array([-0.3, 0.1, 0.4, 0.5, 0.8, 1.1, 1.3, 1.6, 2.0, 2.4])
    walsh = np.sort([(d[i] + d[j]) / 2 for i in range(10) for j in range(i, 10)])
    est, lo, hi = hodges_lehmann(d, 0.95)
    assert est == pytest.approx(np.median(walsh))
    assert (lo, hi) == (pytest.approx(walsh[8]), pytest.approx(walsh[55 - 9]))


# ------------------------------------------------------------------------------------------ two-way
def test_twoway_with_one_run_is_the_paired_t_test():
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.7, 0.1, 30), rng.normal(0.68, 0.1, 30)
    row = twoway_pair(a[None], b[None])
    ref = stats.ttest_rel(a, b)
    assert row["p"] == pytest.approx(ref.pvalue) and row["df"] == 29
    assert row["estimate"] == pytest.approx(np.mean(a - b))
    lo, hi = ref.confidence_interval()
    assert (row["ci_low"], row["ci_high"]) == (pytest.approx(lo), pytest.approx(hi))


def test_twoway_variance_comes_from_the_anova_mean_squares():
    import statsmodels.formula.api as smf
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(5)
    r, c = 6, 20
    d = 0.01 + rng.normal(0, 0.03, (r, 1)) + rng.normal(0, 0.05, (1, c)) + rng.normal(0, 0.02, (r, c))
    long = pd.DataFrame({"d": d.ravel(), "run": np.repeat(np.arange(r), c).astype(str),
                         "case": np.tile(np.arange(c), r).astype(str)})
    table = anova_lm(smf.ols("d ~ C(run) + C(case)", long).fit())
    ms_r, ms_c, ms_e = table["mean_sq"].to_numpy()
    v = (ms_c + max(ms_r - ms_e, 0)) / (r * c)
    row = twoway_pair(d, np.zeros_like(d), paired=True)
    assert row["estimate"] == pytest.approx(d.mean())
    assert row["statistic"] == pytest.approx(d.mean() / math.sqrt(v))
    terms = [(ms_c, c - 1), (ms_r, r - 1), (-ms_e, (r - 1) * (c - 1))]
    df = (ms_c + ms_r - ms_e) ** 2 / sum(m * m / k for m, k in terms)
    assert row["df"] == pytest.approx(max(df, r - 1))


def test_a_calibration_check_catches_pseudo_replication():
    """Run offsets (SD 0.02) and no loss effect: the seed-averaged Wilcoxon rejects often, the primary test
    about 5 % of the time (40 simulations, a loose bound)."""
    rng = np.random.default_rng(123)
    labels = stratum_labels(40)
    primary = old = 0
    for _ in range(40):
        res = evaluate(dice_tables(Scenario("c", run_sd=0.02), rng), labels)
        primary += bool(res["primary"]["all"].any())
        old += bool(res["wilcoxon"]["all"].any())
    assert primary / 40 <= 0.15 and old / 40 >= 0.3, (primary, old)


# ------------------------------------------------------------------------------------------ families
def test_tarone_leaves_out_the_tests_that_cannot_reach_the_threshold():
    min_p = np.array([2 / 2**20, 2 / 2**20, 2 / 2**5, 2 / 2**6, 2 / 2**7, np.nan])
    keep, k = tarone_select(min_p, 0.05)
    # k = 1: 4 tests reach 0.05; k = 2: 3 reach 0.025; k = 3: 3 reach 0.0167 <= 3 -> K = 3
    assert k == 3 and list(keep) == [True, True, False, False, True, False]


NEMENYI_BLOCK = np.array([[31, 27, 24], [31, 28, 31], [45, 29, 46], [21, 18, 48], [42, 36, 46], [32, 17, 40],
                          [30, 25, 35], [33, 20, 41]], dtype=float)


def test_nemenyi_and_conover_match_scikit_posthocs():
    # scikit_posthocs 0.17.1: posthoc_nemenyi_friedman(x), posthoc_conover_friedman(x) on this block
    _, p = nemenyi(NEMENYI_BLOCK)
    np.testing.assert_allclose(p[np.triu_indices(3, 1)], [0.08482154, 0.57684696, 0.00505708], rtol=1e-6)
    _, p = conover(NEMENYI_BLOCK)
    np.testing.assert_allclose(p[np.triu_indices(3, 1)], [3.90745902e-03, 1.26807160e-01, 1.69946504e-04], rtol=1e-6)
    # Demšar's critical difference: q_0.05(k = 3, ∞)/√2 = 2.343
    assert nemenyi_cd(3, 8) == pytest.approx(2.343 * math.sqrt(3 * 4 / (6 * 8)), rel=1e-3)


# ------------------------------------------------------------------------------------------ agreement
def test_log_scale_bland_altman_and_the_empty_gt_policy():
    gt = np.array([0.0, 0.0, 2.0, 4.0, 8.0, 10.0, 5.0, 3.0, 6.0, 7.0])
    pred = np.array([0.0, 1.0, 2.2, 3.6, 9.0, 11.0, 5.5, 2.7, 6.6, 7.7])
    df = pd.DataFrame({"network": "n", "loss": "a", "case_id": [f"c{i}" for i in range(10)], "gt_tmtv_ml": gt,
                       "pred_tmtv_ml": pred})
    row = agreement_table(df, ["tmtv_ml"], scale="log", n_boot=0).iloc[0]
    keep = gt > 0
    ref = bland_altman(np.log(gt[keep]), np.log(pred[keep]))
    assert row["n"] == 8 and row["n_empty_both"] == 1 and row["n_one_zero"] == 1
    assert row["ba_bias"] == pytest.approx(np.mean(np.log(pred[keep] / gt[keep])))
    assert row["ba_loa_high"] == pytest.approx(ref["loa_high"]) and row["margin"] == pytest.approx(math.log(1.2))
    linear = agreement_table(df, ["tmtv_ml"], scale="linear", n_boot=0).iloc[0]
    assert linear["n"] == 9 and linear["n_empty_both"] == 1  # the (0, 1) pair is a real error on the linear scale
    # LoA CI (Bland & Altman 1999)
    sd, n = ref["sd"], 8
    se = sd * math.sqrt(1 / n + 1.959964**2 / (2 * (n - 1)))
    lo_lo, lo_hi, hi_lo, hi_hi = loa_ci(sd, n, ref["bias"])
    assert hi_hi - ref["loa_high"] == pytest.approx(stats.t.ppf(0.975, n - 1) * se, rel=1e-5)


# ------------------------------------------------------------------------------------------ report
def _three_losses(shift: float, runs: int = 3) -> pd.DataFrame:
    from lossbench.compare.simulate import case_frame

    rng = np.random.default_rng(8)
    y = dice_tables(Scenario("r", shift=shift, null=False), rng, runs=runs, cases=30)
    return case_frame(y, folds=1, seed=3, loss_names=("l1dfl", "dl", "dfl"))


def test_report_headline_lists_the_significant_friedman_and_marks_flagged_strata(tmp_path):
    comp = compare_cases(_three_losses(0.12), ["dice"], n_boot=100)
    t = comp.tests
    omnibus = t[t["family"] == "omnibus"]
    assert len(omnibus) == 1 and omnibus["significant"].item()
    lines = headline(comp)
    assert any(line.startswith("Omnibus: Friedman on dice in attunet significant") for line in lines)
    conf = t[(t["family"] == "confirmatory") & (t["analysis"] == "primary")]
    assert set(conf["loss_b"]) == {"l1dfl"} and set(conf["loss_a"]) == {"dl", "dfl"}
    assert conf.set_index("loss_a").loc["dl", "better"] == "dl"  # dl carries the planted +0.12
    assert (t.loc[t["family"] == "exploratory", "loss_b"] != "l1dfl").any()  # dl − dfl: exploratory
    folder = tmp_path / "r"
    folder.mkdir()
    write_report(comp, folder, {"experiment": "x", "tracking_uri": "sqlite:////home/me/lb/mlflow.db",
                                "selection": "s", "comparison_run_id": "r", "created": "now", "version": "0"})
    md = (folder / "report.md").read_text()
    assert "Omnibus: Friedman on dice in attunet significant" in md and "/home/me" not in md
    flagged = t[(t["family"].str.startswith("stratum:")) & (t["flag"] != "")]
    assert len(flagged) and "† " in md
    assert (folder / "plots" / "attunet-cd.png").is_file() and (folder / "plots" / "attunet-rank-stability.png").is_file()


def test_missing_worst_and_public_uri():
    cases = _three_losses(0.0, runs=2)
    cases.loc[cases.index[:5], "dice"] = np.nan
    comp = compare_cases(cases, ["dice"], n_boot=0, missing="worst")
    assert comp.units["dice"].min() >= 0 and any("--missing worst" in n for n in comp.notes)
    assert public_uri("sqlite:////home/me/x/mlflow.db") == "sqlite://…/mlflow.db"
    assert public_uri("http://user:pw@host:5000") == "http://host:5000"
