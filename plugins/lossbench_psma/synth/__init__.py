"""Synthetic PSMA PET/CT phantoms: a deterministic stand-in for the study's cohort.

There is no public PSMA data on CI, so the default ``psma`` dataset is a synthetic cohort
written here, once, in the nnU-Net raw layout, and read by the ordinary loader. What the
phantoms hold (geometry, anatomy, uptake, lesions, the cohort layout and its determinism) is
specified in docs/synthetic-cohort.md.

Modules, each importing only the ones above it:

- :mod:`.config`: :class:`SynthConfig` and its defaults, :func:`config_for`, the case seeds and
  the affine.
- :mod:`.anatomy`: the grid, the tissue painter, the per-patient draws and the painted anatomy.
- :mod:`.lesions`: the lesion count, the recovery coefficient and the lesion painter.
- :mod:`.case`: :func:`synthesize` and :func:`generate_case`, one case from its seed.
- :mod:`.cohort`: :func:`generate_cohort`, :func:`default_cohort`, :func:`cohort_key` and the
  manifest's :func:`label_strata`.

The public API is re-exported here: ``from lossbench_psma import synth`` then ``synth.<name>``.
"""

from __future__ import annotations

from .anatomy import TISSUES
from .case import SynthCase, generate_case, synthesize
from .cohort import (DEFAULT_N_CASES, DEFAULT_SEED, ID_PREFIX, cohort_key, default_cohort, generate_cohort,
                     label_strata)
from .config import GENERATOR_VERSION, WHOLE_BODY_SHAPE, SynthConfig, case_affine, case_seed, config_for

__all__ = [
    "DEFAULT_N_CASES",
    "DEFAULT_SEED",
    "GENERATOR_VERSION",
    "ID_PREFIX",
    "TISSUES",
    "WHOLE_BODY_SHAPE",
    "SynthCase",
    "SynthConfig",
    "case_affine",
    "case_seed",
    "cohort_key",
    "config_for",
    "default_cohort",
    "generate_case",
    "generate_cohort",
    "label_strata",
    "synthesize",
]
