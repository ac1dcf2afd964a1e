"""LoRA (Hu et al. 2021) through `peft`: low-rank adapters beside the backbone's linear and 1x1 /
kxk convolution layers; only the adapters (in the block groups the plan trains) and the head
train, the pre-trained weights stay as they are.

`target_modules: auto` picks the layers per architecture family, from the backbone kind that builds
it (`BackboneKind.lora_targets`: ViT's attention and MLP projections, a BERT's attention and
feed-forward layers, ...; elsewhere every linear and non-depthwise convolution). peft refuses depthwise convolutions unless r
is a multiple of their groups, so `auto` leaves them out. The adapters are part of the model's state
dict, so checkpoints hold them and resume exactly; `merge_adapters` folds them into the weights
for export.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from torch import nn

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.search_space import Choice, LogUniform
from transferlab.finetune.strategies.base import LayerDecay, StrategyConfig, TopGroups, TopGroupsStrategy, register
from transferlab.models.backbone import lora_targets

log = logging.getLogger(__name__)

@dataclass
class LoraConfig(TopGroups, LayerDecay, StrategyConfig):
    r: int = field(default=8, metadata=rule("int", low=1))
    alpha: float = field(default=16.0, metadata=rule("float", low=0.0, low_open=True))  # adapters scale by alpha / r
    dropout: float = field(default=0.0, metadata=rule("float", low=0.0, high=1.0, high_open=True))
    target_modules: str | list[str] = "auto"  # auto | a list of module names | one full-match regex
    train_norm: bool = field(default=False, metadata=rule("bool"))  # also train the norm layers of adapted groups


def _auto_targets(model: nn.Module) -> list[str] | str:
    family = lora_targets(model)
    if family is not None:
        return family
    return [
        name for name, m in model.named_modules()
        if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)
    ]


def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold every adapter into its base layer's weights and put the base layer back in its place:
    the network of a plain timm model, computing what the adapted one did."""
    from peft.tuners.lora import LoraLayer

    for name, module in list(model.named_modules()):
        if isinstance(module, LoraLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
    return model


@register("lora")
class Lora(TopGroupsStrategy):
    Config = LoraConfig
    search_space = {"lr": LogUniform(3e-4, 3e-2), "r": Choice([4, 8, 16]), "alpha": Choice([8.0, 16.0, 32.0])}

    def validate(self) -> None:
        t = self.config.target_modules
        if not (isinstance(t, str) and t) and not (isinstance(t, (list, tuple)) and t and all(isinstance(x, str) and x for x in t)):
            raise ConfigError(f"strategy.target_modules={t!r}: use auto, a list of module names, or one regex")

    def prepare(self, backbone) -> None:
        from peft import LoraConfig as PeftLoraConfig
        from peft import inject_adapter_in_model

        c = self.config
        targets = _auto_targets(backbone.model) if c.target_modules == "auto" else c.target_modules
        if isinstance(targets, (list, tuple)):
            targets = list(targets)
        peft_cfg = PeftLoraConfig(r=c.r, lora_alpha=c.alpha, lora_dropout=c.dropout, target_modules=targets, bias="none")
        try:
            inject_adapter_in_model(peft_cfg, backbone.model)
        except ValueError as e:  # peft's "Target modules ... not found" or an unsupported layer type
            raise ConfigError(
                f"strategy=lora could not adapt {backbone.name} with target_modules={targets!r} ({str(e).splitlines()[0][:200]}): "
                "set strategy.target_modules to names of its linear or convolution layers"
            ) from e
        adapters = sum(p.numel() for n, p in backbone.model.named_parameters() if "lora_" in n)
        log.info("lora: r=%d alpha=%g on %s: %s adapter parameters", c.r, c.alpha, targets, f"{adapters:,}")

    def deployable(self, model: nn.Module) -> nn.Module:
        return merge_adapters(model)

    def trainable(self, name: str, param: nn.Parameter, is_norm: bool) -> bool:
        return "lora_" in name or (is_norm and self.config.train_norm)

    def norm_layers_train(self) -> bool:
        return self.config.train_norm

    def knobs(self) -> dict:
        knobs = super().knobs()
        if isinstance(knobs.get("target_modules"), (list, tuple)):
            knobs["target_modules"] = list(knobs["target_modules"])
        return knobs
