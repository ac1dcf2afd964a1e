"""Full fine-tuning: every block group trains from the start, with layer-wise lr decay."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.finetune.search_space import LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, Strategy, StrategyConfig, register


@dataclass
class FullConfig(LayerDecay, StrategyConfig):
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))


@register("full")
class Full(Strategy):
    Config = FullConfig
    search_space = {"lr": LogUniform(1e-4, 1e-2), "decay": Uniform(0.3, 1.0)}
