"""``lossbench compare``: stratified, corrected paired statistics of losses, read back from MLflow.

- :mod:`lossbench.compare.loader` — which runs (all finished cell runs of an experiment, the children
  of a matrix run, or a list) and their ``evaluation/cases.csv`` tables, through lossbench.tracking;
- :mod:`lossbench.compare.stats` — the tests: two-way (runs and cases random) primary test, exact
  Wilcoxon with Hodges–Lehmann CI, Friedman, Nemenyi/Conover, Tarone and the corrections, rank stability;
- :mod:`lossbench.compare.families` — the pre-specified families (confirmatory, strata, omnibus,
  post-hoc, exploratory) and the test table;
- :mod:`lossbench.compare.simulate` — simulated comparisons with planted truths (calibration);
- :mod:`lossbench.compare.agreement` — Lin's CCC, Bland–Altman, TOST equivalence, CP / TDI of predicted
  against GT biomarkers;
- :mod:`lossbench.compare.analysis` — from the per-case tables to a :class:`Comparison`;
- :mod:`lossbench.compare.report` — the report folder (CSV, PNG, Markdown, self-contained HTML), written
  atomically;
- :mod:`lossbench.compare.publish` — the comparison run in MLflow.

This module imports nothing heavy, so the CLI can read its constants without paying for pandas.
It is also callable: ``lossbench.compare(...)`` is :func:`lossbench.api.compare`.
"""

from __future__ import annotations

from lossbench._callable import make_callable

#: Metrics compared when ``--metrics`` is not given.
DEFAULT_METRICS: tuple[str, ...] = (
    "dice", "f1", "sensitivity", "precision", "fp", "fn", "fp_volume_ml", "fn_volume_ml",
)

__all__ = ["DEFAULT_METRICS"]

make_callable(__name__, "compare")
