"""FixMatch (Sohn et al. 2020, "FixMatch: Simplifying Semi-Supervised Learning with Consistency and
Confidence"): each step also draws `unlabeled_ratio` x the batch from the unlabelled pool
(data.unlabeled); the model's prediction on a weak view (the run's random crop and flip) becomes a
hard pseudo-label where its confidence reaches `threshold`, and supervises a strong view of the
same image (RandAugment-style operations and Cutout: data/images/strong_augment.py).

It is a loss, not a freezing plan: which block groups train and at which lrs is partial/full's
choice (`unfreeze_top`, `decay`). `probe_init` starts the head from the L-BFGS probe of lp_ft and
extract (on cached features of the labelled split), so the pseudo-labels are the pre-trained
features' best guess from the first step rather than a random head's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from transferlab.config.checks import rule
from transferlab.data.images.strong_augment import StrongAugment
from transferlab.errors import ConfigError
from transferlab.finetune.linear_probe import probe_head
from transferlab.finetune.search_space import LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, ProbeSettings, StrategyConfig, TopGroups, TopGroupsStrategy, register


def fixmatch_loss(weak_logits: torch.Tensor, strong_logits: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The unlabelled term and its mask: cross-entropy of the strong view against the weak view's
    argmax, for the images whose weak softmax reaches `threshold`, averaged over all of them (the
    paper's normalisation: a batch with few confident images pulls little)."""
    probs = weak_logits.detach().softmax(-1)
    confidence, pseudo = probs.max(-1)
    mask = (confidence >= threshold).to(strong_logits.dtype)
    loss = (F.cross_entropy(strong_logits, pseudo, reduction="none") * mask).mean()
    return loss, mask


@dataclass
class FixMatchConfig(ProbeSettings, TopGroups, LayerDecay, StrategyConfig):
    lr: float = field(default=1e-3, metadata=rule("float", low=0.0, low_open=True))
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))
    unlabeled_ratio: int = field(default=7, metadata=rule("int", low=1))  # mu: unlabelled images per labelled one in a step
    threshold: float = field(default=0.95, metadata=rule("float", low=0.0, high=1.0, high_open=True))
    unlabeled_weight: float = field(default=1.0, metadata=rule("float", low=0.0, low_open=True))  # lambda_u
    strong_ops: int = field(default=2, metadata=rule("int", low=0))
    cutout: float = field(default=0.5, metadata=rule("float", low=0.0, high=1.0))
    probe_init: bool = field(default=True, metadata=rule("bool"))
    # With probe_init the head fits features made with the pre-trained norm statistics (lp_ft's reason).
    train_norm_stats: bool = field(default=False, metadata=rule("bool"))


@register("fixmatch")
class FixMatch(TopGroupsStrategy):
    Config = FixMatchConfig
    search_space = {"lr": LogUniform(1e-4, 1e-2), "decay": Uniform(0.3, 1.0), "threshold": Uniform(0.7, 0.98), "unlabeled_weight": LogUniform(0.3, 3.0)}
    needs_unlabeled = True
    modalities = ("image",)

    def check_run(self, max_epochs: int | None, head_type: str) -> None:
        if self.config.probe_init and head_type != "linear":
            raise ConfigError(f"strategy=fixmatch strategy.probe_init=true starts from a linear probe, but model.head.type={head_type}: "
                              "use model.head.type=linear, or strategy.probe_init=false")

    def schedule_fix(self, max_epochs: int) -> str:
        return "strategy.unfreeze_top=0 trains the head alone; use unfreeze_top >= 1 (null: every group)"

    def norm_layers_train(self) -> bool:
        return self.config.train_norm_stats

    @property
    def unlabeled_ratio(self) -> int:
        return self.config.unlabeled_ratio

    @property
    def strong_augment(self) -> StrongAugment:
        return StrongAugment(num_ops=self.config.strong_ops, cutout=self.config.cutout)

    def unlabeled_loss(self, module, features, views):
        weak, strong = views
        loss, mask = fixmatch_loss(module.head_logits(weak), module.head_logits(strong), self.config.threshold)
        module.log("train/pseudo_label_rate", mask.mean(), on_step=True, on_epoch=True, batch_size=len(mask))
        return self.config.unlabeled_weight * loss

    @property
    def has_first_phase(self) -> bool:
        return self.config.probe_init

    def first_phase(self, head, features):
        return probe_head(head, features, self.config.probe_weight_decays, self.config.probe_max_iter)
