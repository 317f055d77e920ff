"""Contract tests over every registered network (built-in or third-party), timm style.

Each network is built with small parameters (``SMALL``) so that a forward and backward pass
take well under a second on a CPU; a network this table does not know is tried with its own
defaults on a small patch only if it is small, and skipped with the reason otherwise.
"""

from __future__ import annotations

import math

import pytest

from lossbench.errors import LossbenchError
from lossbench.registry import load_registry

REGISTRY = load_registry()
NETWORKS = REGISTRY.components("network")
BUILTIN = ("attunet", "segresnet", "unet", "unetr")

#: name -> (parameter overrides, a patch the small network takes, a patch its validator must refuse)
SMALL: dict[str, tuple[dict[str, object], int, int]] = {
    "attunet": ({"channels": "4,8,16", "strides": "2,2"}, 16, 18),
    "unet": ({"channels": "4,8,16", "strides": "2,2", "num_res_units": 1}, 16, 18),
    "segresnet": ({"init_filters": 8, "blocks_down": "1,1,1", "blocks_up": "1,1"}, 16, 18),
    "unetr": ({"img_size": 32, "hidden_size": 48, "num_heads": 2, "mlp_dim": 96, "feature_size": 4}, 32, 16),
}
#: Unknown networks are exercised with their defaults only below this many parameters.
MAX_UNKNOWN_PARAMS = 2_000_000
IN_CHANNELS = OUT_CHANNELS = 2
SPATIAL_DIMS = 3


def _small_config(component):
    """(overrides, good patch, bad patch or None), or pytest.skip with the reason."""
    if component.name in SMALL:
        return SMALL[component.name]
    import torch

    for patch in (16, 32):
        try:
            component.check({}, patch=(patch,) * SPATIAL_DIMS, spatial_dims=SPATIAL_DIMS)
        except LossbenchError:
            continue
        with torch.device("meta"):
            net = component.build({}, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, spatial_dims=SPATIAL_DIMS)
        n_params = sum(p.numel() for p in net.parameters())
        if n_params > MAX_UNKNOWN_PARAMS:
            pytest.skip(f"network {component.name!r} from plugin {component.provider} has {n_params:,} parameters "
                        "at its defaults and no small configuration is known here; its plugin should ship its own "
                        "contract test with small parameters")
        return {}, patch, None
    pytest.skip(f"network {component.name!r} from plugin {component.provider} takes neither a 16^3 nor a 32^3 "
                "patch at its defaults; no small configuration is known here")


@pytest.fixture(params=NETWORKS, ids=[c.name for c in NETWORKS])
def network(request):
    component = request.param
    overrides, patch, bad = _small_config(component)
    return component, overrides, patch, bad


def _build(component, overrides):
    return component.build(overrides, in_channels=IN_CHANNELS, out_channels=OUT_CHANNELS, spatial_dims=SPATIAL_DIMS)


def test_builtin_networks_are_registered():
    names = REGISTRY.names("network")
    failures = REGISTRY.plugin_manager.failures()
    assert set(BUILTIN) <= set(names), f"missing built-in networks; plugin failures: {failures}"
    for name in BUILTIN:
        assert REGISTRY.get("network", name).plugin == "monai"


def test_forward_shape_and_channels(network):
    import torch

    component, overrides, patch, _ = network
    component.check(overrides, patch=(patch,) * 3, spatial_dims=3)
    torch.manual_seed(0)
    net = _build(component, overrides)
    x = torch.randn(2, IN_CHANNELS, patch, patch, patch)
    out = net(x)
    assert isinstance(out, torch.Tensor)
    assert out.shape == (2, OUT_CHANNELS, patch, patch, patch)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # the input really has 2 channels: a 1-channel input is refused
    with pytest.raises(RuntimeError):
        net(torch.randn(2, 1, patch, patch, patch))


def test_finite_gradient(network):
    import torch

    component, overrides, patch, _ = network
    torch.manual_seed(0)
    net = _build(component, overrides).train()
    x = torch.randn(2, IN_CHANNELS, patch, patch, patch, requires_grad=True)
    target = (torch.rand(2, patch, patch, patch) > 0.9).long()
    loss = torch.nn.functional.cross_entropy(net(x), target)
    loss.backward()
    assert torch.isfinite(loss)
    params = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    grads = [p.grad for _, p in params if p.grad is not None]
    # Nearly every weight must be trained. (MONAI's ViT blocks hold cross-attention norms that a
    # UNETR never uses: a tiny share of the weights, and the reason DDP needs
    # find_unused_parameters=True for it.)
    unused = [n for n, p in params if p.grad is None]
    used_share = sum(p.numel() for _, p in params if p.grad is not None) / sum(p.numel() for _, p in params)
    assert used_share > 0.99, f"parameters without a gradient: {unused}"
    assert all(torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_validator_accepts_good_and_rejects_bad_patch(network):
    component, overrides, patch, bad = network
    component.check(overrides, patch=(patch,) * 3, spatial_dims=3)
    if bad is None:
        pytest.skip(f"no patch known that {component.name!r} must refuse")
    with pytest.raises(LossbenchError, match="patch"):
        component.check(overrides, patch=(bad,) * 3, spatial_dims=3)
    with pytest.raises(LossbenchError, match="patch"):
        component.check(overrides, patch=(patch, patch, bad), spatial_dims=3)


# -- the built-in networks: paper configurations and their validators -----------------------
PAPER = {
    "attunet": ("AttentionUnet", dict(spatial_dims=3, in_channels=2, out_channels=2,
                                      channels=(16, 32, 64, 128, 256, 512), strides=(2, 2, 2, 2, 2))),
    "segresnet": ("SegResNet", dict(spatial_dims=3, init_filters=16, blocks_down=[1, 2, 2, 4], blocks_up=[1, 1, 1],
                                    in_channels=2, out_channels=2)),
    "unet": ("UNet", dict(spatial_dims=3, in_channels=2, out_channels=2, channels=(16, 32, 64, 128, 256, 512),
                          strides=(2, 2, 2, 2, 2), num_res_units=2, norm="batch")),
    "unetr": ("UNETR", dict(in_channels=2, out_channels=2, img_size=(128, 128, 128), feature_size=16,
                            hidden_size=768, mlp_dim=3072, num_heads=12, norm_name="batch", res_block=True)),
}


@pytest.mark.parametrize("name", BUILTIN)
def test_defaults_build_the_paper_network(name):
    """The defaults give the same modules and tensor shapes as the reference's MONAI call (PAPER.md §3)."""
    import monai.networks.nets as nets
    import torch

    cls, kwargs = PAPER[name]
    with torch.device("meta"):
        ours = REGISTRY.build("network", name, in_channels=2, out_channels=2, spatial_dims=3)
        reference = getattr(nets, cls)(**kwargs)
    assert type(ours) is type(reference)
    shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert [type(m).__name__ for m in ours.modules()] == [type(m).__name__ for m in reference.modules()]


@pytest.mark.parametrize(
    ("name", "patch", "hint"),
    [
        ("attunet", 100, "use --patch 96 or 128"),
        ("unet", 100, "use --patch 96 or 128"),
        ("segresnet", 100, "use --patch 96 or 104"),
        ("unetr", 96, "use --patch 128"),
    ],
)
def test_paper_defaults_refuse_a_bad_patch_with_a_hint(name, patch, hint):
    component = REGISTRY.get("network", name)
    component.check({}, patch=(128, 128, 128), spatial_dims=3)
    with pytest.raises(LossbenchError) as info:
        component.check({}, patch=(patch,) * 3, spatial_dims=3)
    assert hint in str(info.value)
    assert name in str(info.value)


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("attunet", {"strides": "2,2,2"}, "strides needs 5 entries"),
        ("unet", {"channels": "8,16,32", "strides": "2,2,2,2,2"}, "strides needs 2 entries"),
        ("segresnet", {"blocks_up": "1,1"}, "blocks_up needs 3 entries"),
        ("segresnet", {"init_filters": 12}, "multiple of num_groups"),
        ("unetr", {"hidden_size": 100}, "divisible by num_heads"),
        ("unetr", {"img_size": 120}, "multiple of 16"),
        ("attunet", {"kernel_size": 4}, "odd"),
    ],
)
def test_validator_rejects_inconsistent_parameters(name, overrides, match):
    component = REGISTRY.get("network", name)
    with pytest.raises(LossbenchError, match=match):
        component.check(overrides, patch=(128, 128, 128), spatial_dims=3)
    with pytest.raises(LossbenchError, match=match):  # the factory refuses them too, before MONAI does
        component.build(overrides, in_channels=2, out_channels=2, spatial_dims=3)


def test_unet_batch_norm_needs_more_than_one_bottleneck_voxel_for_a_batch_of_one():
    component = REGISTRY.get("network", "unet")
    small = {"channels": "4,8,16", "strides": "2,2"}
    with pytest.raises(LossbenchError, match="batch norm"):
        component.check(small, patch=(4, 4, 4), spatial_dims=3, batch_size=1)
    component.check(small, patch=(4, 4, 4), spatial_dims=3, batch_size=2)
    component.check({**small, "norm": "instance"}, patch=(4, 4, 4), spatial_dims=3, batch_size=1)


def test_attunet_batch_norm_bottleneck_is_refused_at_batch_one_and_really_fails():
    import torch

    component = REGISTRY.get("network", "attunet")
    small = {"channels": "4,8,16", "strides": "2,2"}
    with pytest.raises(LossbenchError, match="batch norm"):
        component.check(small, patch=(4, 4, 4), spatial_dims=3, batch_size=1)
    component.check(small, patch=(8, 8, 8), spatial_dims=3, batch_size=1)
    net = component.build(small, in_channels=2, out_channels=2, spatial_dims=3).train()
    with pytest.raises(ValueError, match="more than 1 value per channel"):  # what the check prevents
        net(torch.zeros(1, 2, 4, 4, 4))


def test_total_stride_is_the_product_of_strides():
    component = REGISTRY.get("network", "attunet")
    params = {"channels": "4,8,16", "strides": "2,3"}
    component.check(params, patch=(6 * 5,) * 3, spatial_dims=3)
    with pytest.raises(LossbenchError, match=f"not divisible by {math.prod((2, 3))}"):
        component.check(params, patch=(32,) * 3, spatial_dims=3)
