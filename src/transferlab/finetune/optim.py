"""Optimizer parameter groups and per-group learning-rate schedules from a FinetunePlan.

One optimizer group per (block group, decay / no-decay), each named so LearningRateMonitor shows
it, each with its own lr. Scales are applied here, not through timm's `lr_scale` key, which only
timm's schedulers read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.finetune.plan import FinetunePlan, ParamUnit


@dataclass
class OptimConfig:
    name: str = "adamw"  # adamw | sgd
    weight_decay: float = 0.05
    momentum: float = 0.9  # sgd
    betas: tuple[float, float] = (0.9, 0.999)  # adamw
    warmup_epochs: float = 1.0
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.01


def _no_decay(name: str, param: nn.Parameter, skip: set[str]) -> bool:
    # Norm scales, biases and timm's no_weight_decay() tensors (pos_embed, cls_token) are not decayed.
    return param.ndim <= 1 or name in skip or name.endswith(".bias")


def param_groups(plan: FinetunePlan, backbone: nn.Module, head: nn.Module, lr: float, weight_decay: float) -> tuple[list[dict], list[ParamUnit]]:
    """Optimizer groups and, aligned with them, the unit each one schedules."""
    skip = set(backbone.no_weight_decay()) if hasattr(backbone, "no_weight_decay") else set()
    names = {id(p): n for n, p in backbone.named_parameters()}
    head_unit = ParamUnit("head", list(head.parameters()), 1.0, 0, False)
    head_names = {id(p): n for n, p in head.named_parameters()}
    groups, units = [], []
    for unit in [*plan.units(), head_unit]:
        lookup = head_names if unit is head_unit else names
        decay = [p for p in unit.params if not _no_decay(lookup[id(p)], p, skip)]
        no_decay = [p for p in unit.params if _no_decay(lookup[id(p)], p, skip)]
        for params, wd, suffix in ((decay, weight_decay, ""), (no_decay, 0.0, ".no_decay")):
            if params:
                groups.append({"params": params, "lr": lr * unit.lr_scale, "weight_decay": wd, "name": unit.name + suffix})
                units.append(unit)
    return groups, units


def build_optimizer(cfg: OptimConfig, groups: list[dict]) -> torch.optim.Optimizer:
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, betas=tuple(cfg.betas))
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    raise ConfigError(f"optim.name={cfg.name!r} is not supported: use adamw or sgd")


class GroupLr:
    """lr multiplier for one optimizer group at a given step: a pure function, so resume is exact."""

    def __init__(self, plan: FinetunePlan, unit: ParamUnit, cfg: OptimConfig, steps_per_epoch: int, total_steps: int):
        self.plan, self.unit, self.cfg = plan, unit, cfg
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.total_steps = max(1, total_steps)

    def base(self, step: int) -> float:
        warmup = self.cfg.warmup_epochs * self.steps_per_epoch
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if self.cfg.schedule == "constant":
            return 1.0
        if self.cfg.schedule != "cosine":
            raise ConfigError(f"optim.schedule={self.cfg.schedule!r}: use cosine or constant")
        t = min(1.0, (step - warmup) / max(1.0, self.total_steps - warmup))
        lo = self.cfg.min_lr_ratio
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * t))

    def __call__(self, step: int) -> float:
        return self.base(step) * self.plan.lr_factor(self.unit, step / self.steps_per_epoch)


def build_scheduler(optimizer: torch.optim.Optimizer, plan: FinetunePlan, units: list[ParamUnit], cfg: OptimConfig, steps_per_epoch: int, total_steps: int):
    # LambdaLR saves (and on load overwrites) the __dict__ of callable objects, which would put the
    # plan and its parameters into checkpoints; plain functions are skipped, and since each lr is a
    # pure function of the step there is nothing to restore.
    def as_function(group_lr: GroupLr):
        return lambda step: group_lr(step)

    lambdas = [as_function(GroupLr(plan, u, cfg, steps_per_epoch, total_steps)) for u in units]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambdas)
