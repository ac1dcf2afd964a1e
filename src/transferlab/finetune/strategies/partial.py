"""Partial fine-tuning: the head and the top `unfreeze_top` block groups train from the start."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.strategies.base import LayerDecay, Strategy, StrategyConfig, TopGroups, register


def top_k(unfreeze_top: int | None, num_groups: int) -> int:
    """How many groups `unfreeze_top` means on a backbone of `num_groups` (None: all)."""
    if unfreeze_top is None:
        return num_groups
    if not 0 <= unfreeze_top <= num_groups:
        raise ConfigError(
            f"strategy.unfreeze_top={unfreeze_top} but this backbone has {num_groups} block groups: use 0..{num_groups} (or null for all)"
        )
    return unfreeze_top


def top_groups_from(unfreeze_top: int | None, num_groups: int, epoch: int) -> list[int | None]:
    """The schedule that trains the top `unfreeze_top` groups from `epoch` on, and no other."""
    top = top_k(unfreeze_top, num_groups)
    return [epoch if i >= num_groups - top else None for i in range(num_groups)]


@dataclass
class PartialConfig(TopGroups, LayerDecay, StrategyConfig):
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))
    unfreeze_top: int | None = field(default=3, metadata=rule("int", low=0, nullable=True))


@register("partial")
class Partial(Strategy):
    Config = PartialConfig

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        return top_groups_from(self.config.unfreeze_top, num_groups, 0)

    def schedule_fix(self, max_epochs: int) -> str:
        return "strategy.unfreeze_top=0 trains the head alone, which is strategy=extract: use that, or unfreeze_top >= 1"
