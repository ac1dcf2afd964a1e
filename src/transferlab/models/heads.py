"""Classification heads that sit on the backbone's pooled features."""

from __future__ import annotations

import copy

import torch
from torch import nn

from transferlab.errors import ConfigError


def build_head(kind: str, in_features: int, num_classes: int, hidden: int = 256, dropout: float = 0.0) -> nn.Module:
    """`linear`: dropout + one linear layer; `mlp`: Linear(hidden) + GELU + dropout + Linear."""
    if kind == "linear":
        layers: list[nn.Module] = [nn.Dropout(dropout)] if dropout else []
        return nn.Sequential(*layers, nn.Linear(in_features, num_classes))
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
    raise ConfigError(f"model.head.type={kind!r} is not a head: use linear or mlp")


def scaled_head(head: nn.Module, scale: float) -> nn.Module:
    """A copy of `head` whose logits are `scale` times the original's: the output layer's weight and
    bias scaled, so temperature scaling (scale = 1/T) travels inside the network to every export
    format with no layer of its own. Both head types end in that linear layer."""
    out = copy.deepcopy(head)
    last = out[-1] if isinstance(out, nn.Sequential) and len(out) else None
    if not isinstance(last, nn.Linear):
        raise TypeError(f"a head whose last layer is a Linear is scaled; this one ends in {type(last).__name__}")
    with torch.no_grad():
        last.weight.mul_(scale)
        if last.bias is not None:
            last.bias.mul_(scale)
    return out
