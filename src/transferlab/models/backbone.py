"""The backbone interface: what the rest of transferlab asks of a pre-trained network.

One implementation per kind of network, each a module `models/<kind>_backbone.py` that implements
the protocol below and registers one `BackboneKind` under the `model.backbone` it answers to. The
kind holds all the rest of transferlab knows of it: its builder, the rules of its own `model.*`
keys, and what it can do (masked-LM pre-training, the export formats that fit it, its fused-AdamW
default, the LoRA targets of the network families it builds). Code elsewhere asks the kind, so a
new kind is its module and a preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

import torch
from omegaconf import OmegaConf
from torch import nn

from transferlab.config.checks import Rule, check_rules, register_choice_rules
from transferlab.data.batch import Batch, BatchTransform
from transferlab.errors import ConfigError
from transferlab.models.groups import BlockGroup


@runtime_checkable
class Backbone(Protocol):
    name: str  # the architecture (timm name, HF id or folder)
    model: nn.Module  # the network whose parameters train; its state dict is the checkpoint's backbone.*
    weights: str  # where the weights came from, for logs and metrics.json
    num_features: int  # width of features()
    modality: str  # "image" | "text": which data and transforms fit it

    def features(self, batch: Batch) -> torch.Tensor:
        """Pooled features [B, num_features] of a transformed batch."""

    def block_groups(self) -> list[BlockGroup]:
        """The network cut into ordered groups, bottom to top, by its own matcher."""

    def batch_transform(self, augment: Any = None) -> BatchTransform:
        """The per-batch transform that turns a loader's batch into this network's input."""

    def input_spec(self) -> dict:
        """What the input must look like (image preprocessing, or tokenizer and max length): json-able."""

    @property
    def storage_size(self) -> int:
        """How large a data source should store each example (image side length; token count)."""


KIND_KEY = "model.backbone"  # the config key that names the kind


@dataclass(frozen=True)
class BackboneKind:
    """One kind of backbone, as the rest of transferlab sees it."""

    name: str  # what model.backbone says
    modality: str  # the data its backbones read: "image" | "text"
    # (model=<run's model config>, data=<run's data config>, weights=<a weights source>) -> Backbone;
    # it reads the keys it has.
    build: Callable[..., Backbone]
    rules: Mapping[str, Rule] = field(default_factory=dict)  # its own model.* keys, checked with the run config
    supports_mlm: bool = False  # task=mlm / tapt can pre-train it (models/masked_lm.py)
    export_formats: tuple[str, ...] = ()  # `transferlab export --format` choices that write it, best first
    fused_adamw: bool = False  # optim.fused=null: whether AdamW takes the fused kernel
    # LoRA's `target_modules: auto`, per class name of the network the kind builds (peft matches a
    # module name or its last parts, or one full-match regex).
    lora_targets: Mapping[str, list[str] | str] = field(default_factory=dict)
    # The kind of a model config that names none (one written before model.backbone existed).
    default: bool = False


_KINDS: dict[str, BackboneKind] = {}


def register_kind(kind: BackboneKind) -> BackboneKind:
    _KINDS[kind.name] = kind
    register_choice_rules(KIND_KEY, kind.name, dict(kind.rules), default=kind.default)
    return kind


def kinds() -> list[BackboneKind]:
    return [_KINDS[name] for name in sorted(_KINDS)]


def kind_name(model: Mapping | None) -> str:
    """The kind a run's model config names (the default kind where it names none)."""
    default = next((k.name for k in _KINDS.values() if k.default), None)
    return str((model or {}).get("backbone", default))


def find_kind(name: str) -> BackboneKind | None:
    return _KINDS.get(name)


def backbone_kind(name: str) -> BackboneKind:
    if name not in _KINDS:
        raise ConfigError(f"model.backbone={name!r} is not a kind of backbone: use one of {', '.join(sorted(_KINDS))}")
    return _KINDS[name]


def build_backbone(kind: str, model: dict, data: dict, weights: str) -> Backbone:
    """The backbone of kind `kind` from the run's `model` and `data` config (each kind reads the keys
    it has, checked against the kind's rules), with weights from the source `weights` names."""
    found = backbone_kind(kind)
    check_rules(OmegaConf.create({"model": model}), dict(found.rules))
    return found.build(model=model, data=data, weights=weights)


def lora_targets(network: nn.Module) -> list[str] | str | None:
    """LoRA's default targets for `network`, from the kind that knows its family; None for a family
    no kind names."""
    family = type(network).__name__
    return next((k.lora_targets[family] for k in kinds() if family in k.lora_targets), None)


@torch.no_grad()
def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
