"""``lossbench compare``: stratified, corrected paired statistics of losses, read back from MLflow.

- :mod:`lossbench.compare.loader` — which runs (all finished cell runs of an experiment, the children
  of a matrix run, or a list) and their ``evaluation/cases.csv`` tables, through lossbench.tracking;
- :mod:`lossbench.compare.stats` — paired Wilcoxon signed-rank and Friedman tests per group × stratum
  level × metric, the multiple-comparison correction, effect sizes (pure pandas / scipy / statsmodels);
- :mod:`lossbench.compare.agreement` — Lin's CCC, Bland–Altman, TOST equivalence, CP / TDI of predicted
  against GT biomarkers;
- :mod:`lossbench.compare.analysis` — from the per-case tables to a :class:`Comparison`;
- :mod:`lossbench.compare.report` — the report folder (CSV, PNG, Markdown, self-contained HTML), written
  atomically;
- :mod:`lossbench.compare.publish` — the comparison run in MLflow.

This module imports nothing heavy, so the CLI can read its constants without paying for pandas.
"""

from __future__ import annotations

#: Metrics compared when ``--metrics`` is not given.
DEFAULT_METRICS: tuple[str, ...] = (
    "dice", "f1", "sensitivity", "precision", "fp", "fn", "fp_volume_ml", "fn_volume_ml",
)

__all__ = ["DEFAULT_METRICS"]
