"""Engine helpers that need no training."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from lossbench.engine import epoch_seed, injected_failure_epoch, label_on_pet_grid
from lossbench.errors import LossbenchError


def test_label_on_the_pet_grid_is_kept():
    label = SimpleNamespace(array=np.eye(3, dtype=np.uint8)[..., None].repeat(2, 2), affine=np.eye(4))
    pet = SimpleNamespace(array=np.zeros((3, 3, 2)), affine=np.eye(4))
    assert label_on_pet_grid(label, pet) is label.array


def test_label_on_another_grid_is_resampled_nearest():
    lab = np.zeros((10, 10, 10), bool)
    lab[2:5, 2:5, 2:5] = True  # 1-mm voxels 2..4 (centres 2..4 mm) -> nearest for 0.5-mm centres 1.5..4.0 mm
    pet = SimpleNamespace(array=np.zeros((20, 20, 20)), affine=np.diag([0.5, 0.5, 0.5, 1.0]))
    out = label_on_pet_grid(SimpleNamespace(array=lab, affine=np.eye(4)), pet)
    assert out.shape == (20, 20, 20) and out.sum() == 27 * 8
    assert out[3:9, 3:9, 3:9].all()


def test_epoch_seeds_are_stable_and_distinct():
    assert epoch_seed(0, 3) == epoch_seed(0, 3)
    assert len({epoch_seed(s, e) for s in range(3) for e in range(50)}) == 150


def test_failure_hook(monkeypatch):
    monkeypatch.delenv("LOSSBENCH_FAIL_AT_EPOCH", raising=False)
    assert injected_failure_epoch("dl-attunet-fold0-seed0") is None
    monkeypatch.setenv("LOSSBENCH_FAIL_AT_EPOCH", "2")
    assert injected_failure_epoch("dl-attunet-fold0-seed0") == 2
    monkeypatch.setenv("LOSSBENCH_FAIL_AT_EPOCH", "dl-attunet-fold0-seed1:1")
    assert injected_failure_epoch("dl-attunet-fold0-seed0") is None
    assert injected_failure_epoch("dl-attunet-fold0-seed1") == 1
    monkeypatch.setenv("LOSSBENCH_FAIL_AT_EPOCH", "soon")
    with pytest.raises(LossbenchError):
        injected_failure_epoch("x")


def _cell_for_state(folder, identity="cell-id"):
    """A Cell with only what load_state reads (its folder and the prepared identity)."""
    from lossbench.engine import Cell

    cell = Cell.__new__(Cell)
    cell.folder = folder
    cell.prepared = SimpleNamespace(identity=identity)
    return cell


class _RunsCode:
    """Unpickling this calls os.system: a crafted checkpoint."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    torch.save({"identity": "cell-id", "format": "lossbench-state/2", "x": _RunsCode(marker)}, tmp_path / "state.pt")
    with pytest.raises(LossbenchError, match="cannot be read safely"):
        _cell_for_state(tmp_path).load_state()
    assert not marker.exists()


def test_state_loads_with_weights_only_and_stale_temporaries_are_removed(tmp_path):
    import torch

    from lossbench.engine import atomic_torch_save

    state = {"format": "lossbench-state/2", "identity": "cell-id", "run_id": "r", "epoch": 3,
             "model": {"w": torch.ones(2)}, "best": {"epoch": 1, "dice": 0.5, "model": None},
             "history": [{"train_loss": 0.1}]}
    atomic_torch_save(state, tmp_path / "state.pt")
    (tmp_path / ".state.pt.123.abc.tmp").write_bytes(b"torn")  # a write killed half-way
    loaded = _cell_for_state(tmp_path).load_state()
    assert loaded["epoch"] == 3 and torch.equal(loaded["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".state.pt.*.tmp"))
    assert _cell_for_state(tmp_path, identity="another").load_state() is None  # another cell's state
