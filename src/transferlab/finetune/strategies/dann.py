"""DANN (Ganin et al. 2016, "Domain-Adversarial Training of Neural Networks"): a domain classifier
on the backbone's pooled features learns to tell the labelled source batch from an unlabelled
target batch (data.unlabeled: a target domain's images, e.g. data=fashion_mnist_shifted
data.unlabeled=source), behind a gradient-reversal layer (finetune/gradient_reversal.py), so the
backbone learns features the classifier cannot tell apart while the head learns the task on the
source. Scored on the run's test split: the target's, for a shifted source.

The reversal's weight ramps from 0 to `reversal_weight` as in the paper, 2 / (1 + exp(-gamma p)) - 1
over the run's progress p, so the classifier's first, uninformed gradients do not scramble the
pre-trained features. Which groups train is partial/full's choice (`unfreeze_top`, `decay`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from transferlab.config.checks import rule
from transferlab.finetune.gradient_reversal import reverse_gradient
from transferlab.finetune.search_space import LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, StrategyConfig, TopGroups, TopGroupsStrategy, register


def reversal_ramp(progress: float, gamma: float) -> float:
    """The paper's schedule for the reversal weight: 0 at the start, towards 1 at the end."""
    return 2.0 / (1.0 + math.exp(-gamma * min(max(progress, 0.0), 1.0))) - 1.0


def domain_classifier(num_features: int, hidden: int, dropout: float) -> nn.Module:
    return nn.Sequential(
        nn.Linear(num_features, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(dropout),
        nn.Linear(hidden, 1),
    )


@dataclass
class DannConfig(TopGroups, LayerDecay, StrategyConfig):
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))
    unlabeled_ratio: int = field(default=1, metadata=rule("int", low=1))  # target images per source image in a step
    # 0: the target batch only passes through the network beside the source batch, so BatchNorm's
    # statistics see both domains and nothing else adapts: the control that tells what the
    # adversarial loss adds to that.
    domain_weight: float = field(default=1.0, metadata=rule("float", low=0.0))
    reversal_weight: float = field(default=1.0, metadata=rule("float", low=0.0, low_open=True))
    reversal_gamma: float = field(default=10.0, metadata=rule("float", low=0.0, low_open=True))
    hidden: int = field(default=1024, metadata=rule("int", low=1))
    dropout: float = field(default=0.5, metadata=rule("float", low=0.0, high=1.0, high_open=True))


@register("dann")
class Dann(TopGroupsStrategy):
    Config = DannConfig
    search_space = {"lr": LogUniform(3e-4, 1e-2), "decay": Uniform(0.3, 1.0), "domain_weight": LogUniform(0.1, 3.0)}
    needs_unlabeled = True

    def __init__(self, config):
        super().__init__(config)
        self.discriminator: nn.Module | None = None

    def schedule_fix(self, max_epochs: int) -> str:
        return "with strategy.unfreeze_top=0 nothing below the features learns from the domain loss: use unfreeze_top >= 1 (null: every group)"

    def prepare(self, backbone) -> None:
        c = self.config
        self.discriminator = domain_classifier(backbone.num_features, c.hidden, c.dropout)

    def state_module(self) -> nn.Module | None:
        return self.discriminator

    @property
    def unlabeled_ratio(self) -> int:
        return self.config.unlabeled_ratio

    def reversal(self, step: int, total_steps: int | None) -> float:
        progress = step / total_steps if total_steps else 1.0
        return self.config.reversal_weight * reversal_ramp(progress, self.config.reversal_gamma)

    def unlabeled_loss(self, module, features, views):
        (target,) = views
        weight = self.reversal(module.global_step, module.total_steps)
        joined = torch.cat([features, target])
        logits = module.strategy_state(reverse_gradient(joined, weight)).squeeze(-1)
        domain = torch.cat([torch.zeros(len(features)), torch.ones(len(target))]).to(logits)
        loss = F.binary_cross_entropy_with_logits(logits, domain)
        accuracy = ((logits > 0).to(domain) == domain).float().mean()
        module.log_dict({"train/domain_acc": accuracy, "train/reversal_weight": weight}, on_step=True, on_epoch=True, batch_size=len(joined))
        return self.config.domain_weight * loss
