"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T divides a classifier's logits so that their softmax fits held-out labels (minimum
log-loss). The argmax, and so the accuracy, is unchanged; only the confidences move. A strongly
penalised probe is underconfident (its softmax stays flat) and a weakly penalised one
overconfident, so a confidence threshold means something only after this.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The T > 0 that minimises the mean cross-entropy of `logits` / T on `labels`."""
    logits, labels = logits.detach().double(), labels.long()
    log_t = torch.zeros(1, dtype=torch.float64, requires_grad=True)  # log T: T stays positive
    opt = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return float(log_t.detach().exp())
