"""The psma dataset's CT window and PET scaling options (the reference's min-max and raw SUV by default)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from lossbench_psma.dataset import PsmaDataset, parse_ct_window

from lossbench.errors import LossbenchError
from lossbench.registry import load_registry


def _val_item(root, **params):
    ds = PsmaDataset(data=str(root), **params)
    item = ds.transforms("val")(ds.data_dicts(ds.cases("train")[:1])[0])
    return np.asarray(item["image"][0]), np.asarray(item["image"][1]), ds


def test_defaults_are_the_reference(nnunet_root, one_torch_thread):
    ct, pet, _ = _val_item(nnunet_root)
    assert ct.min() == pytest.approx(0.0) and ct.max() == pytest.approx(1.0)  # min-max over the body crop
    _, pet_scaled, _ = _val_item(nnunet_root, pet_scale=4.0)
    assert np.allclose(pet_scaled * 4.0, pet, rtol=1e-5, atol=1e-6) and pet.max() > 1.0


def test_a_fixed_hu_window_maps_tissue_to_the_same_value(nnunet_root, one_torch_thread):
    ds = PsmaDataset(data=str(nnunet_root), ct_window="-1000,1000")
    case = ds.cases("train")[0]
    ct_hu = np.asarray(nib.load(str(case.ct)).get_fdata())
    ct, _, _ = _val_item(nnunet_root, ct_window="-1000,1000")
    assert ct.min() >= 0.0 and ct.max() <= 1.0
    # a voxel of h HU becomes (h + 1000) / 2000, clipped: the water level 0 HU is 0.5 in every case
    expected = np.clip((np.clip(ct_hu, -1000, 1000) + 1000) / 2000, 0, 1)
    assert ct.max() == pytest.approx(expected.max(), abs=1e-3)


@pytest.mark.parametrize("text, fragment", [("-1000", "LOW,HIGH"), ("200,100", "LOW < HIGH"), ("soft", "LOW,HIGH")])
def test_bad_ct_windows(text, fragment):
    with pytest.raises(LossbenchError, match=fragment):
        parse_ct_window(text)
    component = load_registry().get("dataset", "psma")
    with pytest.raises(LossbenchError, match=fragment):
        component.check({"ct_window": text})


def test_bad_pet_scale_is_refused_before_anything_runs():
    component = load_registry().get("dataset", "psma")
    with pytest.raises(LossbenchError, match="pet_scale"):
        component.check({"pet_scale": -2.0})
    assert parse_ct_window("MinMax") is None and parse_ct_window("-150,250") == (-150.0, 250.0)
