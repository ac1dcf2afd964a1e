"""The supervised cross-entropy's answers to class imbalance: class weights and logit adjustment.

Class weights scale each example's loss by its class's weight (the mean is then over the weights,
as torch's `cross_entropy(weight=...)` takes it). `balanced` weights are n / (K n_c) of the
training subset: 1 for every class of a balanced subset, so they change nothing there.

Logit adjustment (Menon et al. 2021, "Long-tail learning via logit adjustment") adds
tau * log(prior) to the logits in the training loss only, the prior being the class frequencies of
the labels that loss sees. The network then learns logits that need no prior of their own: at test
its plain logits target the balanced error, and a rare class is no longer under-predicted for
being rare. On a balanced subset (data.samples_per_class) that prior is uniform and the offset
changes nothing: the subset has already removed the skew. Offsetting by the pool's prior there
would correct the skew a second time and over-predict the rare class.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from transferlab.data.class_balance import class_counts
from transferlab.errors import ConfigError

NONE, BALANCED = "none", "balanced"


@dataclass(frozen=True)
class LossTerms:
    """What the training cross-entropy adds to the plain one; None where it adds nothing."""

    class_weights: torch.Tensor | None = None  # [K]
    logit_offset: torch.Tensor | None = None  # [K]: tau * log(prior)

    @property
    def plain(self) -> bool:
        return self.class_weights is None and self.logit_offset is None


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """n / (K n_c) per class of `labels`; 0 for a class with no example (it has no loss to weigh)."""
    counts = class_counts(labels, num_classes).double()
    weights = labels.numel() / (num_classes * counts)
    return torch.where(counts > 0, weights, torch.zeros_like(weights)).float()


def class_weights(spec, labels: torch.Tensor, num_classes: int) -> torch.Tensor | None:
    """optim.class_weights as a [K] tensor: none, balanced (of `labels`, the training subset) or one weight per class."""
    if spec is None or spec == NONE:
        return None
    if spec == BALANCED:
        return balanced_class_weights(labels, num_classes)
    weights = [float(w) for w in spec]
    if len(weights) != num_classes:
        raise ConfigError(f"optim.class_weights has {len(weights)} weights and the data has {num_classes} classes: "
                          f"give one weight per class, in the data's class order, or optim.class_weights=balanced")
    if min(weights) < 0 or max(weights) <= 0:
        raise ConfigError(f"optim.class_weights={weights}: weights must be >= 0 and at least one > 0")
    return torch.tensor(weights, dtype=torch.float32)


def logit_offset(prior: torch.Tensor, tau: float) -> torch.Tensor:
    """tau * log(prior) per class; a class the prior lacks gets the smallest present one's log, not -inf."""
    prior = prior.double()
    floor = prior[prior > 0].min() if bool((prior > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
    return (float(tau) * prior.clamp_min(float(floor)).log()).float()


def supervised_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0,
                             terms: LossTerms | None = None) -> torch.Tensor:
    """The training loss on labelled examples: the plain cross-entropy, with `terms`' weights and offset."""
    if terms is None or terms.plain:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    if terms.logit_offset is not None:
        logits = logits + terms.logit_offset.to(logits)
    weight = terms.class_weights.to(logits) if terms.class_weights is not None else None
    return F.cross_entropy(logits, labels, weight=weight, label_smoothing=label_smoothing)
