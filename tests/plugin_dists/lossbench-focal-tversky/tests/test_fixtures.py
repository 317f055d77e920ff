"""The fixtures lossbench's pytest plugin gives every plugin author (no conftest needed)."""

import pytest

import lossbench_focal_tversky


def test_the_plugin_registers_only_its_loss(lossbench_make_registry):
    registry = lossbench_make_registry(lossbench_focal_tversky)
    assert registry.names("loss") == ["focal_tversky"]
    assert registry.get("loss", "focal_tversky").plugin == "lossbench_focal_tversky"


def test_it_is_installed_beside_the_builtins(lossbench_registry):
    component = lossbench_registry.get("loss", "focal_tversky")
    assert component.distribution == "lossbench-focal-tversky" and component.version == "0.2.0"
    assert {"l1dfl", "dl"} <= set(lossbench_registry.names("loss"))


def test_gamma_one_is_plain_tversky(lossbench_build_loss):
    import torch

    logits = torch.zeros(1, 2, 2, 2)
    target = torch.tensor([[[[1, 0], [0, 0]]]])
    plain = lossbench_build_loss("focal_tversky", gamma=1, smooth=0)
    focal = lossbench_build_loss("focal_tversky", smooth=0)
    assert float(plain(logits, target)) == pytest.approx(1 - 5 / 17)
    assert float(focal(logits, target)) == pytest.approx((12 / 17) ** 0.75)


def test_contract_with_the_weights_swapped(lossbench_loss_contract):
    results = lossbench_loss_contract(
        "focal_tversky", {"alpha": 0.3, "beta": 0.7, "gamma": 1.0},
        cases=[({}, [[[0.0, 0.0], [0.0, 0.0]]], [[[1, 0]]], 1 - 0.5 / (0.5 + 0.3 * 0.5 + 0.7 * 0.5))],
    )
    assert [check for check, error in results if error is None][-1] == "case0"
