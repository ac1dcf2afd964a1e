"""Backbones by name through timm, with weights from a weights source and their preprocessing.

The preprocessing (mean, std, interpolation, crop) is read from the model's pretrained config so
that a new backbone never needs a hand-written normalisation.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field

import timm
import torch
from torch import nn

from transferlab.errors import ConfigError
from transferlab.models.weights import WeightsSource, hub_error, hub_offline, hub_unreachable, load_weights

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preprocess:
    """What the data pipeline must do to feed this backbone."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bicubic"
    crop_pct: float = 0.875
    in_chans: int = 3

    def as_dict(self) -> dict:
        return {
            "image_size": self.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "in_chans": self.in_chans,
        }


@dataclass
class Backbone:
    model: nn.Module  # timm model with num_classes=0: forward() returns pooled features
    name: str
    weights: str  # description of where the weights came from
    preprocess: Preprocess
    num_features: int = field(init=False)

    def __post_init__(self) -> None:
        self.num_features = int(self.model.num_features)


def _suggest(name: str) -> str:
    names = timm.list_models()
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.6)
    if not close:
        close = timm.list_models(f"*{name.split('_')[0]}*")[:5]
    return ", ".join(close) if close else "see timm.list_models()"


def _cached_locally(name: str) -> bool:
    """Whether the hub cache already holds this model's weights (then offline still works)."""
    try:
        from huggingface_hub import scan_cache_dir

        hub_id = timm.models.get_pretrained_cfg(name.split(".")[0]).hf_hub_id or ""
        repos = {r.repo_id for r in scan_cache_dir().repos}
        return hub_id.split(":")[0] in repos if hub_id else False
    except Exception:  # no cache dir yet, or an unknown layout: try the download as usual
        return False


def create_timm_model(name: str, weights: WeightsSource, **kwargs) -> tuple[nn.Module, str]:
    """The full timm model (pretrained classifier included) with its weights loaded."""
    if name not in timm.list_models() and not timm.is_model(name):
        raise ConfigError(f"unknown model '{name}': close timm names are {_suggest(name)}; set model.name=<one of them>")
    if weights.kind == "hub":
        if hub_offline():
            raise hub_error(name, RuntimeError("HF_HUB_OFFLINE is set"))
        unreachable = hub_unreachable()
        if unreachable and not _cached_locally(name):
            raise hub_error(name, ConnectionError(unreachable))
        try:
            return timm.create_model(name, pretrained=True, **kwargs), f"hub ({name})"
        except Exception as e:  # connection refused, DNS failure, no such tag: all mean "no weights"
            raise hub_error(name, e) from e
    model = timm.create_model(name, pretrained=False, **kwargs)
    if weights.kind == "none":
        return model, "none (random init)"
    classifier = model.default_cfg.get("classifier", "classifier")
    optional = tuple(k for k in model.state_dict() if k.startswith(f"{classifier}."))
    return model, load_weights(model, weights, optional=optional)


def resolve_preprocess(model: nn.Module, image_size: int | None) -> Preprocess:
    cfg = timm.data.resolve_model_data_config(model)
    in_chans, height, _ = cfg["input_size"]
    return Preprocess(
        image_size=int(image_size or height),
        mean=tuple(float(m) for m in cfg["mean"]),
        std=tuple(float(s) for s in cfg["std"]),
        interpolation=cfg.get("interpolation", "bicubic") or "bicubic",
        crop_pct=float(cfg.get("crop_pct", 0.875) or 0.875),
        in_chans=int(in_chans),
    )


def build_backbone(
    name: str,
    weights: str | None,
    image_size: int | None = None,
    drop_path_rate: float = 0.0,
) -> Backbone:
    source = WeightsSource.parse(weights)
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    try:
        model, description = create_timm_model(name, source, **kwargs)
    except TypeError as e:  # architectures without stochastic depth
        if not kwargs:
            raise
        log.warning("%s takes no drop_path_rate (%s); building it without", name, e)
        model, description = create_timm_model(name, source)
    preprocess = resolve_preprocess(model, image_size)
    model.reset_classifier(0)
    log.info("backbone %s, weights %s, %s", name, description, preprocess)
    return Backbone(model=model, name=name, weights=description, preprocess=preprocess)


@torch.no_grad()
def count_params(module: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
