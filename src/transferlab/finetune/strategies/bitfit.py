"""BitFit (Ben Zaken et al. 2022, "BitFit: Simple Parameter-efficient Fine-tuning for
Transformer-based Masked Language-models"): only the biases of the backbone train, with the head.
The smallest strategy there is: one hook (docs/architecture.md uses it as the worked example)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.finetune.search_space import LogUniform
from transferlab.finetune.strategies.base import Strategy, StrategyConfig, register


@dataclass
class BitFitConfig(StrategyConfig):
    lr: float = field(default=1e-3, metadata=rule("float", low=0.0, low_open=True))


@register("bitfit")
class BitFit(Strategy):
    Config = BitFitConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2)}

    def trainable(self, name, param, is_norm) -> bool:
        return name.endswith(".bias")
