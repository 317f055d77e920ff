from lossbench.testing import LossCase, LossContract

# logits [B=1, C=2, 2, 2], all zero: the foreground probability is 0.5 on every voxel.
HALF = [[[[0.0, 0.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]]]
# target [B=1, 1, 2, 2]: one foreground voxel. Then TP = 0.5, FP = 3 × 0.5 = 1.5, FN = 0.5.
ONE_VOXEL = [[[[1, 0], [0, 0]]]]
# Confident and right (margin 20 in the logits): TI = 1, the loss is 0.
RIGHT = [[[[-20.0, 20.0], [20.0, 20.0]], [[20.0, -20.0], [-20.0, -20.0]]]]


class TestFocalTversky(LossContract):
    loss_name = "focal_tversky"
    loss_cases = [
        # TI = 0.5 / (0.5 + 0.7 × 1.5 + 0.3 × 0.5) = 5/17; FTL = (1 − 5/17)^(1/γ), γ = 4/3
        LossCase({}, HALF, ONE_VOXEL, (12 / 17) ** 0.75, id="half"),
        LossCase({}, RIGHT, ONE_VOXEL, 0.0, id="right"),
    ]


class TestFocalTverskyNoFocus(LossContract):
    loss_name = "focal_tversky"
    loss_params = {"gamma": 1.0, "alpha": 0.5, "beta": 0.5}
    loss_cases = [
        # α = β = 0.5, γ = 1 is the Dice loss: 1 − 0.5 / (0.5 + 0.75 + 0.25) = 2/3
        ({}, HALF, ONE_VOXEL, 2 / 3),
        # a case's own params override loss_params: β = 1, so FN counts fully, FP by half
        ({"beta": 1.0}, HALF, ONE_VOXEL, 1 - 0.5 / (0.5 + 0.75 + 0.5)),
    ]
