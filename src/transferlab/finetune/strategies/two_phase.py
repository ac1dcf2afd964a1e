"""The textbook recipe (e.g. Keras' transfer-learning guide): the head alone for `head_epochs` at
lr, then the top `unfreeze_top` block groups join it and everything trains at lr * `phase2_lr_ratio`
(1/100 by default). optim's warm-up and cosine run within each phase."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.finetune.schedules import Clock, warmup_cosine
from transferlab.finetune.search_space import IntRange, LogUniform
from transferlab.finetune.strategies.base import LayerDecay, StrategyConfig, TopGroups, TopGroupsStrategy, register


@dataclass
class TwoPhaseConfig(TopGroups, LayerDecay, StrategyConfig):
    lr: float = field(default=1e-3, metadata=rule("float", low=0.0, low_open=True))
    unfreeze_top: int | None = field(default=3, metadata=rule("int", low=1, nullable=True))
    head_epochs: int = field(default=5, metadata=rule("int", low=1))
    phase2_lr_ratio: float = field(default=0.01, metadata=rule("float", low=0.0, high=1.0, low_open=True))


@register("two_phase")
class TwoPhase(TopGroupsStrategy):
    Config = TwoPhaseConfig
    search_space = {"lr": LogUniform(1e-3, 3e-2), "phase2_lr_ratio": LogUniform(0.01, 1.0), "unfreeze_top": IntRange(1, 4)}

    @property
    def unfreeze_epoch(self) -> int:
        return self.config.head_epochs

    def lr_multiplier(self, unit, step: int, clock: Clock) -> float:
        boundary = self.config.head_epochs * clock.steps_per_epoch
        if step < boundary:
            if not unit.is_head:
                return 0.0
            phase = Clock(clock.steps_per_epoch, boundary, clock.warmup_epochs, clock.schedule, clock.min_lr_ratio)
            return warmup_cosine(step, phase)
        phase = Clock(clock.steps_per_epoch, clock.total_steps - boundary, clock.warmup_epochs, clock.schedule, clock.min_lr_ratio)
        return self.config.phase2_lr_ratio * warmup_cosine(step - boundary, phase)

    def schedule_fix(self, max_epochs: int) -> str:
        return f"strategy.head_epochs (now {self.config.head_epochs}) must be below trainer.max_epochs={max_epochs}"
