"""The backbone interface: what the rest of transferlab asks of a pre-trained network.

One implementation per kind of network, registered by name (`model.backbone` in the config):
`timm` (images, models/timm_backbone.py) and `hf` (Hugging Face text encoders,
models/hf_backbone.py), each a module that implements the same protocol.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch
from torch import nn

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


_BACKBONES: dict[str, Callable[..., Backbone]] = {}


def register_backbone(kind: str) -> Callable:
    def add(fn: Callable[..., Backbone]) -> Callable[..., Backbone]:
        _BACKBONES[kind] = fn
        return fn

    return add


def build_backbone(kind: str, model: dict, data: dict, weights: str) -> Backbone:
    """The backbone of kind `kind` from the run's `model` and `data` config (each kind reads the keys
    it has), with weights from the source `weights` names."""
    if kind not in _BACKBONES:
        raise ConfigError(f"model.backbone={kind!r} is not a kind of backbone: use one of {', '.join(sorted(_BACKBONES))}")
    return _BACKBONES[kind](model=model, data=data, weights=weights)


@torch.no_grad()
def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
