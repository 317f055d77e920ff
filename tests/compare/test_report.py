"""The report folder: its files, the self-contained HTML, and the atomic replacement."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from lossbench.compare.analysis import compare_cases, parse_metrics
from lossbench.compare.report import MARKER, atomic_folder, write_report
from lossbench.errors import LossbenchError
from tests.compare._synth import cases_table, ground_truth


def _cases(losses: dict[str, float], n: int = 24, seeds: int = 1, networks=("attunet",)) -> pd.DataFrame:
    gt = ground_truth(n, seed=2)
    effect = np.random.default_rng(9).normal(0, 0.1, n)
    tables = []
    for network in networks:
        for loss, shift in losses.items():
            for seed in range(seeds):
                t = cases_table(gt, dice_shift=shift, seed=len(tables), case_effect=effect, noise=0.03)
                t.insert(0, "seed", seed)
                t.insert(0, "fold", 0)
                t.insert(0, "network", network)
                t.insert(0, "loss", loss)
                t.insert(0, "run_id", f"run{len(tables)}")
                tables.append(t)
    return pd.concat(tables, ignore_index=True)


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.tables = 0

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs)["src"])
        if tag == "table":
            self.tables += 1


def test_report_files_and_self_contained_html(tmp_path):
    comp = compare_cases(_cases({"dl": 0.0, "l1dfl": 0.1}), ["dice", "fp"], n_boot=200)
    folder = tmp_path / "r"
    folder.mkdir()
    files = write_report(comp, folder, {"experiment": "psma", "tracking_uri": "sqlite:///x.db", "selection": "test",
                                        "comparison_run_id": "abc", "created": "now", "version": "0"})
    names = {p.relative_to(folder).as_posix() for p in files}
    assert {"tests.csv", "agreement.csv", "summary.csv", "runs.csv", "report.md", "report.html", MARKER} <= names
    pngs = sorted(n for n in names if n.startswith("plots/"))
    # dice and fp: a strata plot each; one forest plot per controlled family (two losses: no Friedman ranking)
    assert pngs == ["plots/attunet-dice-strata.png", "plots/attunet-fp-strata.png", "plots/forest-confirmatory.png",
                    "plots/forest-stratum-activity.png", "plots/forest-stratum-count.png",
                    "plots/forest-stratum-spread.png", "plots/forest-stratum-volume.png"]

    tests = pd.read_csv(folder / "tests.csv")
    for col in ("network", "stratum", "level", "metric", "loss_a", "loss_b", "n", "statistic", "p", "p_adjusted",
                "significant", "median_diff", "ci_low", "ci_high", "rank_biserial", "flag"):
        assert col in tests.columns
    dice_all = tests[(tests["metric"] == "dice") & (tests["stratum"] == "all")].iloc[0]
    assert dice_all["significant"] and dice_all["n"] == 24 and dice_all["family"] == "confirmatory"
    assert dice_all["test"] == "twoway" and dice_all["loss_a"] == "dl" and dice_all["loss_b"] == "l1dfl"
    assert dice_all["estimate"] < 0 and dice_all["better"] == "l1dfl"  # candidate − baseline, l1dfl better

    page = (folder / "report.html").read_text()
    parser = _Collector()
    parser.feed(page)
    assert len(parser.imgs) == 7 and parser.tables >= 4
    for src in parser.imgs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r'(src|href)="(http|//|plots/)', page)  # nothing outside the file
    assert "CCC (1/n moments" in page and "±20 % of the mean GT value" in page
    assert "x.db" in page and "sqlite:///x.db" not in page  # no path of the user's machine

    md = (folder / "report.md").read_text()
    for rel in re.findall(r"\]\((plots/[^)]+)\)", md):
        assert (folder / rel).is_file()
    assert "| l1dfl | 1 | 24 |" in md
    assert "training (seed-to-seed) variance cannot be assessed" in md  # one run per loss, said plainly


def test_unknown_metric_names_a_close_one():
    with pytest.raises(LossbenchError, match="did you mean 'dice'"):
        parse_metrics("dise")
    assert parse_metrics("dice, f1 ,dice") == ["dice", "f1"]


def test_single_loss_and_unknown_baseline_are_errors():
    with pytest.raises(LossbenchError, match="only one loss"):
        compare_cases(_cases({"dl": 0.0}), ["dice"])
    with pytest.raises(LossbenchError, match="--baseline 'dice'"):
        compare_cases(_cases({"dl": 0.0, "l1dfl": 0.1}), ["dice"], baseline="dice")


def test_cases_with_different_ground_truth_are_refused():
    cases = _cases({"dl": 0.0, "l1dfl": 0.1})
    cases.loc[cases["loss"] == "dl", "gt_tmtv_ml"] += 1.0
    with pytest.raises(LossbenchError, match="not evaluated on the same test set"):
        compare_cases(cases, ["dice"])


def test_quantile_strata_are_tertiles_of_the_unique_cases():
    cases = _cases({"dl": 0.0, "l1dfl": 0.1}, seeds=3)
    comp = compare_cases(cases, ["dice"], strata="quantile", n_boot=0)
    volume = comp.units[(comp.units["loss"] == "dl")].groupby("stratum_volume").size()
    assert len(volume) == 3 and volume.min() >= 7  # 24 cases in thirds


# ------------------------------------------------------------------------------------------ folder
def _siblings(path):
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def test_atomic_folder_creates_and_replaces_only_when_complete(tmp_path):
    out = tmp_path / "report"
    with atomic_folder(out) as tmp:
        (tmp / MARKER).write_text("{}")
        (tmp / "a.txt").write_text("first")
        assert not out.exists()
    assert (out / "a.txt").read_text() == "first" and _siblings(out) == []

    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "a.txt").write_text("second")
        raise RuntimeError("boom")
    assert (out / "a.txt").read_text() == "first" and _siblings(out) == []

    with atomic_folder(out) as tmp:
        (tmp / MARKER).write_text("{}")
        (tmp / "b.txt").write_text("second")
        assert (out / "a.txt").read_text() == "first"  # the old report stays until the new one is complete
    assert sorted(p.name for p in out.iterdir()) == sorted([MARKER, "b.txt"]) and _siblings(out) == []


def test_atomic_folder_refuses_a_folder_that_is_not_a_report(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(LossbenchError, match="not a lossbench report folder"), atomic_folder(other):
        pass
    assert (other / "thesis.tex").read_text() == "precious" and _siblings(other) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(LossbenchError, match="is a file"), atomic_folder(tmp_path / "file"):
        pass
    empty = tmp_path / "empty"
    empty.mkdir()
    with atomic_folder(empty) as tmp:
        (tmp / MARKER).write_text("{}")
    assert (empty / MARKER).exists()
