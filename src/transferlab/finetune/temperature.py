"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks").

One scalar T divides a classifier's logits so that their softmax fits held-out labels (minimum
log-loss). The argmax, and so the accuracy, is unchanged; only the confidences move. A strongly
penalised probe is underconfident (its softmax stays flat) and a weakly penalised one
overconfident, so a confidence threshold means something only after this.

The mean NLL is convex in 1/T, so its slope in 1/T changes sign once; bisecting log T on that sign
finds the minimum to float precision in a fixed number of steps, where L-BFGS from T=1 can stop
early on a flat stretch. Where the minimum lies outside the bounds the bound is the answer: a
validation split the head separates perfectly has its NLL fall for ever as T goes to 0, and a
temperature at 0 would turn every later prediction into a certainty.
"""

from __future__ import annotations

import math

import torch

T_BOUNDS = (0.05, 20.0)
STEPS = 60  # halvings of the log-T interval: far below float precision in T


def nll_slope(logits: torch.Tensor, labels: torch.Tensor, inverse_t: float) -> float:
    """d(mean NLL)/d(1/T) at 1/T: the softmax's expected logit minus the true class's logit,
    averaged. Summed as p_k (z_k - z_true), so a confident split's slope stays a tiny negative
    number instead of rounding to 0 as 1 - p_true does."""
    probs = (logits * inverse_t).softmax(-1)
    return float((probs * (logits - logits.gather(1, labels[:, None]))).sum(-1).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, bounds: tuple[float, float] = T_BOUNDS,
                    steps: int = STEPS) -> float:
    """The T in `bounds` that minimises the mean cross-entropy of `logits` / T on `labels`."""
    logits, labels = logits.detach().double(), labels.long()
    low, high = math.log(bounds[0]), math.log(bounds[1])
    for _ in range(steps):
        mid = (low + high) / 2
        # NLL rising in 1/T: the minimum has a smaller 1/T, a larger T. A slope of exactly 0 is a
        # split too confident for its softmax to show (or logits T does not change): smaller T.
        if nll_slope(logits, labels, math.exp(-mid)) > 0:
            low = mid
        else:
            high = mid
    return math.exp((low + high) / 2)
