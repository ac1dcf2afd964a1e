"""Gradual unfreezing (BackboneFinetuning-style): the head first, then block groups top-down at
the milestones (the top `unfreeze_top` groups spread evenly over them). A newly unfrozen group
starts at `unfreeze_lr_ratio` of its lr and warms up to it over `unfreeze_warmup_epochs`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.search_space import LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, Strategy, StrategyConfig, TopGroups, register, top_k


@dataclass
class GradualConfig(TopGroups, LayerDecay, StrategyConfig):
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))
    milestones: list[int] = field(default_factory=lambda: [1, 3, 5], metadata=rule("int_list", low=0))
    unfreeze_lr_ratio: float = field(default=0.1, metadata=rule("float", low=0.0, high=1.0, low_open=True))
    unfreeze_warmup_epochs: float = field(default=1.0, metadata=rule("float", low=0.0))


@register("gradual")
class Gradual(Strategy):
    Config = GradualConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2), "decay": Uniform(0.3, 1.0), "unfreeze_lr_ratio": LogUniform(0.01, 1.0)}

    def validate(self) -> None:
        if not self.config.milestones:
            raise ConfigError("strategy=gradual needs strategy.milestones, e.g. [1, 3, 5] (epochs)")

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        top = top_k(self.config.unfreeze_top, num_groups)
        epochs: list[int | None] = [None] * num_groups
        milestones = list(self.config.milestones)
        for j, epoch in enumerate(milestones):
            count = math.ceil(top * (j + 1) / len(milestones))
            for i in range(num_groups - count, num_groups):
                if epochs[i] is None:
                    epochs[i] = epoch
        return epochs

    def unfreeze_factor(self, unit, epoch: float) -> float:
        if epoch < unit.unfreeze_epoch:
            return 0.0
        warm = self.config.unfreeze_warmup_epochs
        if unit.unfreeze_epoch == 0 or warm <= 0:
            return 1.0
        t = min(1.0, (epoch - unit.unfreeze_epoch) / warm)
        r = self.config.unfreeze_lr_ratio
        return r + (1.0 - r) * t

    def schedule_fix(self, max_epochs: int) -> str:
        return f"put strategy.milestones below {max_epochs}, or raise trainer.max_epochs"
