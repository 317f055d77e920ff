import torch

from lossbench.tensors import check_segmentation_inputs


class FocalTverskyLoss(torch.nn.Module):
    def __init__(self, alpha: float = 0.7, beta: float = 0.3, gamma: float = 4 / 3, smooth: float = 1e-5):
        super().__init__()
        self.alpha, self.beta, self.gamma, self.smooth = alpha, beta, gamma, smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        check_segmentation_inputs(logits, target, "focal_tversky")
        p = torch.softmax(logits.float(), dim=1)[:, 1:]
        y = torch.zeros_like(torch.softmax(logits.float(), dim=1)).scatter_(1, target.long(), 1.0)[:, 1:]
        dims = tuple(range(2, p.dim()))
        tp = (p * y).sum(dims)
        fp = (p * (1 - y)).sum(dims)
        fn = ((1 - p) * y).sum(dims)
        ti = (tp + self.smooth) / (tp + self.alpha * fp + self.beta * fn + self.smooth)
        return ((1 - ti).clamp(min=0) ** (1 / self.gamma)).mean()
