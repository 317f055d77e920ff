from lossbench.testing import LossContract


class TestFocalTversky(LossContract):
    loss_name = "focal_tversky"


class TestFocalTverskyNoFocus(LossContract):
    loss_name = "focal_tversky"
    loss_params = {"gamma": 1.0, "alpha": 0.5, "beta": 0.5}
