"""LEEP (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations").

theta(x) is the source classifier's softmax over source classes z. The empirical joint of target
label y and source label z is P(y, z) = 1/n sum over the images of class y of theta(x)_z; the
"expected empirical predictor" of y from x is sum_z P(y | z) theta(x)_z, and LEEP is the mean log
of its probability for the true label.
"""

from __future__ import annotations

import torch


def leep(source_logits: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> float:
    """Mean log-likelihood of the expected empirical predictor; <= 0, higher is better."""
    theta = source_logits.double().softmax(-1)  # [n, Z]
    y = labels.long()
    n = len(y)
    classes = int(num_classes or int(y.max()) + 1)
    joint = torch.zeros(classes, theta.shape[1], dtype=torch.float64).index_add_(0, y, theta) / n  # [C, Z]
    conditional = joint / joint.sum(0, keepdim=True).clamp_min(1e-300)  # P(y | z)
    predicted = (theta @ conditional.T)[torch.arange(n), y]
    return float(predicted.clamp_min(1e-300).log().mean())
