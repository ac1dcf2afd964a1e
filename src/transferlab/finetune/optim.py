"""Optimizer parameter groups and per-group learning-rate schedules from a FinetunePlan.

One optimizer group per (unit, decay / no-decay), each named so LearningRateMonitor shows it, each
with its own lr. Scales are applied here, not through timm's `lr_scale` key, which only timm's
schedulers read.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.finetune.plan import FinetunePlan, ParamUnit
from transferlab.finetune.schedules import Clock


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.01
    fused: bool = False  # adamw: torch's fused kernel (several times faster per step on CPU; other rounding)

    def clock(self, steps_per_epoch: int, total_steps: int) -> Clock:
        return Clock(steps_per_epoch, total_steps, self.warmup_epochs, self.schedule, self.min_lr_ratio)


def _no_decay(name: str, param: nn.Parameter, skip: set[str]) -> bool:
    # Norm scales, biases and timm's no_weight_decay() tensors (pos_embed, cls_token) are not decayed.
    return param.ndim <= 1 or name in skip or name.endswith(".bias")


def param_groups(plan: FinetunePlan, backbone: nn.Module, head: nn.Module, lr: float, weight_decay: float) -> tuple[list[dict], list[ParamUnit]]:
    """Optimizer groups and, aligned with them, the unit each one schedules."""
    skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    backbone_names = {id(p): n for n, p in backbone.named_parameters()}
    head_names = {id(p): n for n, p in [*head.named_parameters(), *plan.strategy_parameters()]}
    groups, units = [], []
    for unit in plan.units():
        lookup = head_names if unit.is_head else backbone_names
        decay = [p for p in unit.params if not _no_decay(lookup[id(p)], p, skip)]
        no_decay = [p for p in unit.params if _no_decay(lookup[id(p)], p, skip)]
        wd = plan.strategy.weight_decay(unit, weight_decay)
        for params, group_wd, suffix in ((decay, wd, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                groups.append({"params": params, "lr": lr * unit.lr_scale, "weight_decay": group_wd, "name": unit.name + suffix})
                units.append(unit)
    return groups, units


def build_optimizer(cfg: OptimConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, betas=tuple(cfg.betas), **({"fused": True} if cfg.fused else {}))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    raise ConfigError(f"optim.name={cfg.name!r} is not supported: use adamw or sgd")


def build_scheduler(optimizer: torch.optim.Optimizer, plan: FinetunePlan, units: list[ParamUnit], clock: Clock):
    # LambdaLR saves (and on load overwrites) the __dict__ of callable objects, which would put the
    # plan and its parameters into checkpoints; plain functions are skipped, and since each lr is a
    # pure function of the step there is nothing to restore.
    strategy = plan.strategy

    def lr_of(unit: ParamUnit):
        return lambda step: strategy.lr_multiplier(unit, step, clock)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=[lr_of(u) for u in units])
