"""SetFit-style few-shot transfer (Tunstall et al. 2022, "Efficient Few-Shot Learning Without
Prompts"): the encoder is tuned contrastively on pairs built from the few labels, then a logistic
regression is fitted on the tuned embeddings.

Pairs are every pair of examples inside a training batch: the cosine similarity of their pooled
features is pulled towards 1 for the same class and 0 for different ones (SetFit's cosine
similarity loss), positives and negatives weighed alike so the many negative pairs of a batch do
not drown the few positive ones. Each epoch reshuffles the batches, so the pairs change with it.

The encoder learns only from the pair loss. The head trains beside it on detached features (it
never pushes on the encoder), so validation accuracy is meaningful during the loop and picks the
checkpoint; after the loop the head is refitted on the tuned encoder's features by the L-BFGS probe
with its penalty chosen on validation, as SetFit fits its logistic-regression head.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.linear_probe import probe_head
from transferlab.finetune.search_space import LogUniform
from transferlab.finetune.strategies.base import LayerDecay, ProbeSettings, Strategy, StrategyConfig, register


@dataclass
class SetFitConfig(ProbeSettings, LayerDecay, StrategyConfig):
    lr: float = field(default=2e-3, metadata=rule("float", low=0.0, low_open=True))  # the head's; the encoder's scales from it
    pair_loss_weight: float = field(default=1.0, metadata=rule("float", low=0.0, low_open=True))
    refit_head: bool = field(default=True, metadata=rule("bool", hint="true: an L-BFGS probe on the tuned features after the loop"))


def pair_loss(features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean squared gap between each in-batch pair's cosine similarity and 1 (same class) or 0
    (different), positives and negatives averaged separately; None for a batch of one."""
    if len(labels) < 2:
        return None
    z = F.normalize(features.float(), dim=-1)
    cos = z @ z.T
    same = labels[:, None] == labels[None, :]
    pairs = torch.triu(torch.ones_like(same), diagonal=1)
    terms = []
    for mask, target in ((same & pairs, 1.0), (~same & pairs, 0.0)):
        if mask.any():
            terms.append(((cos[mask] - target) ** 2).mean())
    return torch.stack(terms).mean()


@register("setfit")
class SetFit(Strategy):
    Config = SetFitConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2), "pair_loss_weight": LogUniform(0.1, 10.0)}

    def check_run(self, max_epochs: int | None, head_type: str) -> None:
        if self.config.refit_head and head_type != "linear":
            raise ConfigError(f"strategy=setfit refits a linear head, but model.head.type={head_type}: "
                              "use model.head.type=linear, or strategy.refit_head=false")

    @property
    def head_on_detached_features(self) -> bool:
        return True

    def feature_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        loss = pair_loss(features, labels)
        return None if loss is None else self.config.pair_loss_weight * loss

    @property
    def has_last_phase(self) -> bool:
        return self.config.refit_head

    def last_phase(self, head, features):
        return probe_head(head, features, self.config.probe_weight_decays, self.config.probe_max_iter)
