"""H-score (Bao et al. 2019, "An Information-Theoretic Approach to Transferability in Task
Transfer Learning"): tr(cov(f)^-1 cov(E[f | y])).

How much of the features' variance lies between the class means, measured in the features' own
metric. With more dimensions than images cov(f) is singular, so a ridge of RIDGE times its mean
variance is added before it is inverted.
"""

from __future__ import annotations

import torch

RIDGE = 1e-3


def hscore(features: torch.Tensor, labels: torch.Tensor, ridge: float = RIDGE) -> float:
    """Higher is better; at most the number of classes - 1 (without the ridge)."""
    f = features.double()
    f = f - f.mean(0)
    y = labels.long()
    n, d = f.shape
    cov = f.T @ f / n
    _, index, counts = torch.unique(y, return_inverse=True, return_counts=True)
    means = torch.zeros(len(counts), d, dtype=torch.float64).index_add_(0, index, f) / counts[:, None]
    between = (means.T * (counts / n)) @ means  # sum_y p(y) g_y g_y^T (f is centred)
    cov = cov + ridge * float(cov.diagonal().mean()) * torch.eye(d, dtype=torch.float64)
    return float(torch.linalg.solve(cov, between).diagonal().sum())
