"""Mixed precision: what ``amp`` and ``amp_dtype`` resolve to on each device, and a bfloat16 CPU cell.

``amp=auto`` (the ``cpu`` preset's) is bfloat16 on a CPU that multiplies bfloat16 in hardware
and float32 elsewhere; ``amp=true`` means what the paper preset always meant on CUDA, and on a
CPU it autocasts to bfloat16 only (float16 there stays float32).
"""

from __future__ import annotations

import pytest
import torch

from lossbench import engine
from lossbench.errors import ParameterError
from lossbench.runconfig import PRESETS, resolve_run_config


def resolve(preset="cpu", **train):
    return resolve_run_config(loss="dl", loss_params={}, network="attunet", network_params={}, dataset="psma",
                              dataset_params={}, fold=0, seed=0, preset=preset, train=train)


@pytest.mark.parametrize("amp, dtype, device, native, expected", [
    (False, "bfloat16", "cuda", True, "float32"),
    (True, "float16", "cuda", False, "float16"),
    (True, "bfloat16", "cuda", False, "bfloat16"),
    ("auto", "float16", "cuda", False, "float16"),
    (True, "float16", "cpu", True, "float32"),      # the paper preset on a CPU: as before, float32
    (True, "bfloat16", "cpu", False, "bfloat16"),   # asked for explicitly: honoured, even if emulated
    ("auto", "bfloat16", "cpu", True, "bfloat16"),
    ("auto", "bfloat16", "cpu", False, "float32"),
    ("auto", "float16", "cpu", True, "bfloat16"),   # a CPU autocasts to bfloat16 only
    (False, "bfloat16", "cpu", True, "float32"),
])
def test_precision_per_device(monkeypatch, amp, dtype, device, native, expected):
    monkeypatch.setattr(engine, "cpu_has_native_bfloat16", lambda: native)
    assert engine.resolve_precision(amp, dtype, torch.device(device)) == expected


def test_the_probe_answers_a_boolean():
    assert engine.cpu_has_native_bfloat16() in (True, False)


def test_amp_accepts_auto_and_the_presets_say_what_they_mean():
    assert resolve(amp="auto").amp == "auto" and resolve(amp="AUTO").amp == "auto"
    assert resolve(amp="true").amp is True and resolve(amp="off").amp is False
    assert PRESETS["paper"]["amp"] is True and PRESETS["paper"]["amp_dtype"] == "float16"
    assert PRESETS["cpu"]["amp"] == "auto" and PRESETS["cpu"]["amp_dtype"] == "bfloat16"
    with pytest.raises(ParameterError, match="true, false or auto"):
        resolve(amp="maybe")


def test_auto_and_true_are_different_cells():
    """What was asked for is the identity: amp=auto and amp=false are two cells, even on a CPU where
    both compute in float32 (the run's ``precision`` param says what it computed in)."""
    ids = {resolve(amp=v).identity("split", "code") for v in ("auto", "false", "true")}
    assert len(ids) == 3


@pytest.mark.parametrize("params, config, device, expected", [
    ({"precision": "bfloat16"}, {"amp": "auto"}, "cpu", "bfloat16"),   # what the run computed in
    ({"precision": "float32"}, {"amp": "auto"}, "cpu", "float32"),     # even where this CPU has bfloat16
    ({"precision": "float16"}, {"amp": True}, "cpu", "float32"),       # a CUDA run predicted on a CPU
    ({"precision": "float16"}, {"amp": True}, "cuda", "float16"),
    ({}, {"amp": True, "amp_dtype": "float16"}, "cuda", "float16"),     # a run from before the param
    ({}, {"amp": False, "amp_dtype": "float16"}, "cpu", "float32"),
])
def test_predict_uses_the_runs_precision(monkeypatch, params, config, device, expected):
    from lossbench.predict import inference_precision

    monkeypatch.setattr(engine, "cpu_has_native_bfloat16", lambda: True)
    assert inference_precision(params, config, torch.device(device)) == expected
