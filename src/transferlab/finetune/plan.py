"""The strategy as data: which block group trains from which epoch, at which learning rate.

Every learning rate is a pure function of (step, config): the optimizer's parameter groups are
built once, up front, and a group that is not yet unfrozen simply has lr 0 and no gradients. That
keeps LR schedulers, checkpoint resume and the LR finder free of special state (see DESIGN.md's
pitfalls: adding parameter groups mid-training breaks torch's schedulers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from torch import nn

from transferlab.errors import ConfigError
from transferlab.finetune.groups import BlockGroup, block_groups

STRATEGIES = ("scratch", "extract", "partial", "full", "gradual")
NORM_POLICIES = ("eval", "train", "affine_only")


@dataclass
class StrategyConfig:
    name: str = "partial"
    lr: float = 1e-3  # head lr; backbone groups are scaled from it
    decay: float = 1.0  # group i below the head gets lr * decay**i
    unfreeze_top: int | None = 2  # partial: top k groups train; gradual: how many in the end (None = all)
    milestones: Sequence[int] = ()  # gradual: epochs at which more groups unfreeze
    unfreeze_lr_ratio: float = 0.1  # gradual: a new group starts at this fraction of its lr ...
    unfreeze_warmup_epochs: float = 1.0  # ... and reaches its full lr after this many epochs
    frozen_norm: str = "eval"  # eval | train | affine_only, for norm layers in frozen groups
    pretrained: bool = True

    def __post_init__(self) -> None:
        if self.name not in STRATEGIES:
            raise ConfigError(f"strategy.name={self.name!r} is unknown: use one of {', '.join(STRATEGIES)}")
        if self.frozen_norm not in NORM_POLICIES:
            raise ConfigError(f"strategy.frozen_norm={self.frozen_norm!r}: use one of {', '.join(NORM_POLICIES)}")
        if not 0 < self.decay <= 1:
            raise ConfigError(f"strategy.decay={self.decay} must be in (0, 1]: 1.0 is one lr for every group")
        if self.name == "gradual" and not self.milestones:
            raise ConfigError("strategy=gradual needs strategy.milestones, e.g. [1, 3, 5] (epochs)")
        if list(self.milestones) != sorted(self.milestones) or any(m < 0 for m in self.milestones):
            raise ConfigError(f"strategy.milestones={list(self.milestones)} must be increasing epochs >= 0")


@dataclass
class ParamUnit:
    """Parameters that share a trainability schedule and a learning rate: one optimizer group."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float  # relative to the head lr
    unfreeze_epoch: int  # first epoch in which these parameters train
    ramp: bool  # start at unfreeze_lr_ratio and warm up (gradual's newly unfrozen groups)


@dataclass
class FinetunePlan:
    config: StrategyConfig
    groups: list[BlockGroup]
    unfreeze_epochs: list[int | None] = field(init=False)  # per group, None = never trains
    # Set under DDP (world size > 1) before the model is wrapped; see apply() and gated_params().
    gate_frozen_grads: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.unfreeze_epochs = self._schedule()

    @classmethod
    def for_backbone(cls, config: StrategyConfig, backbone: nn.Module) -> "FinetunePlan":
        return cls(config, block_groups(backbone))

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def _top_k(self) -> int:
        n, k = self.num_groups, self.config.unfreeze_top
        if k is None:
            return n
        if not 0 <= k <= n:
            raise ConfigError(
                f"strategy.unfreeze_top={k} but this backbone has {n} block groups: use 0..{n} (or null for all)"
            )
        return k

    def _schedule(self) -> list[int | None]:
        n, name = self.num_groups, self.config.name
        if name in ("scratch", "full"):
            return [0] * n
        if name == "extract":
            return [None] * n
        top = self._top_k()
        if name == "partial":
            return [0 if i >= n - top else None for i in range(n)]
        # gradual: the top `top` groups are split evenly over the milestones, top-down.
        epochs: list[int | None] = [None] * n
        milestones = list(self.config.milestones)
        for j, epoch in enumerate(milestones):
            count = math.ceil(top * (j + 1) / len(milestones))
            for i in range(n - count, n):
                if epochs[i] is None:
                    epochs[i] = epoch
        return epochs

    def lr_scale(self, group_index: int) -> float:
        # The head is depth 0; the top backbone group is depth 1.
        return self.config.decay ** (self.num_groups - group_index)

    def trains(self, group_index: int, epoch: int) -> bool:
        start = self.unfreeze_epochs[group_index]
        return start is not None and epoch >= start

    def trainable_groups(self, epoch: int) -> list[int]:
        return [i for i in range(self.num_groups) if self.trains(i, epoch)]

    def ever_trains(self, group_index: int) -> bool:
        return self.unfreeze_epochs[group_index] is not None

    def units(self) -> list[ParamUnit]:
        """Backbone parameter units, bottom to top, for every group that trains at some point."""
        units = []
        for g in self.groups:
            start = self.unfreeze_epochs[g.index]
            norm_params = {id(p) for m in g.norm_modules for p in m.parameters(recurse=False)}
            if self.config.frozen_norm == "affine_only" and (start is None or start > 0) and norm_params:
                # Norm affine parameters of frozen groups train from the start (running stats stay fixed).
                affine = [p for p in g.params if id(p) in norm_params]
                units.append(ParamUnit(f"backbone.{g.name}.norm", affine, self.lr_scale(g.index), 0, False))
                rest = [p for p in g.params if id(p) not in norm_params]
            else:
                rest = g.params
            if start is not None and rest:
                ramp = self.config.name == "gradual" and start > 0
                units.append(ParamUnit(f"backbone.{g.name}", rest, self.lr_scale(g.index), start, ramp))
        return units

    def lr_factor(self, unit: ParamUnit, epoch_float: float) -> float:
        """Multiplier on the unit's lr at a (fractional) epoch: 0 before unfreezing, then a ramp."""
        if epoch_float < unit.unfreeze_epoch:
            return 0.0
        if not unit.ramp:
            return 1.0
        warm = self.config.unfreeze_warmup_epochs
        if warm <= 0:
            return 1.0
        t = min(1.0, (epoch_float - unit.unfreeze_epoch) / warm)
        r = self.config.unfreeze_lr_ratio
        return r + (1.0 - r) * t

    def requires_grad_at(self, epoch: int) -> dict[int, bool]:
        """id(param) -> whether it trains in this epoch."""
        flags = {id(p): False for g in self.groups for p in g.params}
        for unit in self.units():
            if epoch >= unit.unfreeze_epoch:
                for p in unit.params:
                    flags[id(p)] = True
        return flags

    def apply(self, backbone: nn.Module, epoch: int, training: bool) -> None:
        """Set requires_grad and norm-layer modes for this epoch.

        Frozen groups compute no gradients, so the optimizer skips them: no weight decay and no
        momentum drift. Norm layers of frozen groups stay in eval mode under `eval`/`affine_only`
        (Lightning puts every module in train mode at each epoch, so this runs again then).
        """
        flags = self.requires_grad_at(epoch)
        if self.gate_frozen_grads:
            # DDP all-reduces only the parameters that required grad when it wrapped the model, so a
            # group unfrozen later would train on each rank's own gradients and the ranks would
            # drift apart. Every group that ever trains therefore requires grad from the start, and
            # FinetuneCallback drops the gradients of those not yet unfrozen before each optimizer
            # step (gated_params): AdamW and SGD skip a None grad, so they stay bit-identical.
            for unit in self.units():
                for p in unit.params:
                    flags[id(p)] = True
        for p in backbone.parameters():
            p.requires_grad_(flags.get(id(p), False))
        freeze_norm_stats = self.config.frozen_norm in ("eval", "affine_only")
        for g in self.groups:
            frozen = not self.trains(g.index, epoch)
            for m in g.norm_modules:
                m.train(training and not (frozen and freeze_norm_stats))

    def gated_params(self, epoch: int) -> list[nn.Parameter]:
        """Parameters that require grad only because of gate_frozen_grads and must not step in this epoch."""
        if not self.gate_frozen_grads:
            return []
        return [p for unit in self.units() if epoch < unit.unfreeze_epoch for p in unit.params]

    def describe(self, epoch: int = 0) -> str:
        parts = []
        for g in self.groups:
            start = self.unfreeze_epochs[g.index]
            when = "frozen" if start is None else ("trains" if start == 0 else f"from epoch {start}")
            parts.append(f"{g.name}({g.numel() / 1e6:.2f}M, lr x{self.lr_scale(g.index):.3g}, {when})")
        return f"{self.config.name}: " + ", ".join(parts)
