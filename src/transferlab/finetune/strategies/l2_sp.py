"""L2-SP (Li, Grandvalet & Davoine 2018, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks"): full fine-tuning with a penalty that pulls the backbone towards its
pre-trained weights instead of towards zero,

    alpha / 2 * ||w - w0||^2  (backbone)  +  beta / 2 * ||w_head||^2  (the new layers' weights),

the regulariser Transfer-Learning-Library uses as its baseline. The penalty replaces weight decay,
so optim.weight_decay is not applied. The starting point w0 is kept as buffers of the model, so
checkpoints hold it and a resumed run pulls towards the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from transferlab.config.checks import rule
from transferlab.finetune.search_space import LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, Strategy, StrategyConfig, register


@dataclass
class L2SPConfig(LayerDecay, StrategyConfig):
    decay: float = field(default=0.7, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))
    alpha: float = field(default=0.01, metadata=rule("float", low=0.0))  # pull of the backbone towards w0
    beta: float = field(default=0.01, metadata=rule("float", low=0.0))  # L2 on the head's weights


class StartingPoint(nn.Module):
    """The backbone's weights when training started, one buffer per parameter, in parameter order."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.names = [n for n, _ in backbone.named_parameters()]
        for i, (_, p) in enumerate(backbone.named_parameters()):
            self.register_buffer(f"w{i}", p.detach().clone())

    def anchors(self) -> list[torch.Tensor]:
        return [getattr(self, f"w{i}") for i in range(len(self.names))]


@register("l2_sp")
class L2SP(Strategy):
    Config = L2SPConfig
    search_space = {"lr": LogUniform(1e-4, 1e-2), "decay": Uniform(0.3, 1.0), "alpha": LogUniform(1e-4, 1.0), "beta": LogUniform(1e-4, 1.0)}

    def __init__(self, config):
        super().__init__(config)
        self._start: StartingPoint | None = None

    def prepare(self, backbone) -> None:
        self._start = StartingPoint(backbone.model)

    def state_module(self) -> nn.Module | None:
        return self._start

    def weight_decay(self, unit, default: float) -> float:
        return 0.0

    def extra_loss(self, module) -> torch.Tensor | None:
        c = self.config
        start = module.strategy_state
        params = [p for _, p in module.backbone.named_parameters()]
        sp = sum(((p - w0) ** 2).sum() for p, w0 in zip(params, start.anchors()) if p.requires_grad)
        head = sum((m.weight**2).sum() for m in module.head.modules() if isinstance(m, nn.Linear))
        return 0.5 * c.alpha * sp + 0.5 * c.beta * head
