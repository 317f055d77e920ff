"""benchmarks/gpu_pipeline.py --smoke: the GPU pipeline check's code path on CPU (two real `lossbench run` cells)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_pipeline.py"


def _row(out: str, key: str) -> str:
    found = re.search(rf"^{re.escape(key)}\s+(.+)$", out, re.MULTILINE)
    assert found, f"no row {key!r} in the output:\n{out}"
    return found.group(1)


@pytest.mark.slow
def test_smoke_prints_the_measured_table_and_projections():
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], check=False, capture_output=True, text=True,
                          timeout=900)
    out = proc.stdout
    print(out)  # the table, shown by pytest on a failure (and with -s)
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]

    assert "CPU (smoke)" in _row(out, "device")
    steps = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", _row(out, "step time (s)"))]
    assert len(steps) == 2 and all(0 < s < 600 for s in steps), steps  # attunet and segresnet
    shares = [float(v) / 100 for v in re.findall(r"(\d+(?:\.\d+)?) %", _row(out, "data-wait share"))]
    assert len(shares) == 2 and all(0 < s < 1 for s in shares), shares
    assert "n/a" in _row(out, "GPU busy while training") and "n/a" in _row(out, "peak GPU memory (MiB)")
    per_case = [float(v) for v in re.findall(r"\d+(?:\.\d+)?", _row(out, "validation (s/case)"))]
    assert per_case and all(v > 0 for v in per_case), per_case

    # the projections: a cell and the matrix on 1 and 8 GPUs, each a duration for both networks
    duration = r"\d+(?:\.\d+)? (?:min|h|d)"
    for key in ("projected paper cell", "paper matrix, 1 GPU", "paper matrix, 8 GPUs"):
        assert len(re.findall(duration, _row(out, key))) == 2, _row(out, key)
    share = re.search(r"l1dfl share of an AttUNet step at 32³.*?: (\d+(?:\.\d+)?) %", out)
    assert share and 0 <= float(share.group(1)) < 100, out
    # every goal has a verdict; the GPU one cannot be measured on CPU
    assert len(re.findall(r"-> (?:met|NOT met)$", out, re.MULTILINE)) == 5, out
    assert out.count("GPU busy >= 90 % while training: n/a") == 2, out
