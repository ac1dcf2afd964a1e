"""The baseline: the same architecture from random init, every group at one lr."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.search_space import LogUniform
from transferlab.finetune.strategies.base import LayerDecay, Strategy, StrategyConfig, register


@dataclass
class ScratchConfig(LayerDecay, StrategyConfig):
    pretrained: bool = field(default=False, metadata=rule("bool"))


@register("scratch")
class Scratch(Strategy):
    Config = ScratchConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2)}

    def validate(self) -> None:
        if self.config.pretrained:
            raise ConfigError(
                "strategy=scratch with strategy.pretrained=true would fine-tune the pre-trained weights under the "
                "name scratch: use strategy=full strategy.decay=1.0 for that, or drop strategy.pretrained"
            )
