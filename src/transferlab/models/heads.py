"""Classification heads that sit on the backbone's pooled features."""

from __future__ import annotations

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
