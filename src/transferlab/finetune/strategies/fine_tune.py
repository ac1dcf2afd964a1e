"""fastai's `fine_tune`: one epoch (`freeze_epochs`) of the head alone on a one-cycle schedule,
then everything at half the lr with discriminative lrs spread `lr_mult`x geometrically from the
top group down to the bottom one, on a second one-cycle. optim's warm-up and cosine are not used:
each phase's one-cycle is its schedule (fastai's momentum cycling is not copied: betas stay fixed)."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.finetune.schedules import Clock, one_cycle
from transferlab.finetune.search_space import LogUniform
from transferlab.finetune.strategies.base import Strategy, StrategyConfig, register

# fastai's fine_tune runs its frozen phase with fit_one_cycle(pct_start=0.99) at the default div.
_FROZEN_PCT_START = 0.99
_FROZEN_DIV = 25.0


@dataclass
class FineTuneConfig(StrategyConfig):
    freeze_epochs: int = field(default=1, metadata=rule("int", low=1))
    lr_mult: float = field(default=100.0, metadata=rule("float", low=1.0))  # top group lr / bottom group lr
    pct_start: float = field(default=0.3, metadata=rule("float", low=0.0, high=1.0, high_open=True))
    div: float = field(default=5.0, metadata=rule("float", low=1.0))  # the cycle starts at lr / div
    div_final: float = field(default=1e5, metadata=rule("float", low=1.0))  # ... and ends at lr / div_final


@register("fine_tune")
class FineTune(Strategy):
    Config = FineTuneConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2), "lr_mult": LogUniform(10.0, 1000.0)}

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        return [self.config.freeze_epochs] * num_groups

    def lr_scale(self, group_index: int, num_groups: int) -> float:
        # fastai's even_mults(lr / lr_mult, lr, n): geometric from the bottom group to the head.
        return self.config.lr_mult ** (-(num_groups - group_index) / num_groups)

    def lr_multiplier(self, unit, step: int, clock: Clock) -> float:
        c = self.config
        boundary = c.freeze_epochs * clock.steps_per_epoch
        if step < boundary:
            return one_cycle(step, 0, boundary, _FROZEN_PCT_START, _FROZEN_DIV, c.div_final) if unit.is_head else 0.0
        return 0.5 * one_cycle(step, boundary, clock.total_steps, c.pct_start, c.div, c.div_final)

    def schedule_fix(self, max_epochs: int) -> str:
        return f"strategy.freeze_epochs (now {self.config.freeze_epochs}) must be below trainer.max_epochs={max_epochs}"
