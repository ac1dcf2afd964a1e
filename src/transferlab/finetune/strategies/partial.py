"""Partial fine-tuning: the head and the top `unfreeze_top` block groups train from the start."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.finetune.search_space import IntRange, LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, StrategyConfig, TopGroups, TopGroupsStrategy, register


@dataclass
class PartialConfig(TopGroups, LayerDecay, StrategyConfig):
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))
    unfreeze_top: int | None = field(default=3, metadata=rule("int", low=0, nullable=True))


@register("partial")
class Partial(TopGroupsStrategy):
    Config = PartialConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2), "decay": Uniform(0.3, 1.0), "unfreeze_top": IntRange(1, 4)}

    def schedule_fix(self, max_epochs: int) -> str:
        return "strategy.unfreeze_top=0 trains the head alone, which is strategy=extract: use that, or unfreeze_top >= 1"
