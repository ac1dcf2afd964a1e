"""One candidate's frozen features on the run's training subset and validation split.

Built the way a train.py run builds them: the backbone from the model preset (seeded first, so a
random-init control has the weights `strategy=scratch` would start from), the data source with
`data.samples_per_class` and the validation carve, and the feature cache of `strategy=extract`
(keyed by the weights' digest, so a second rank or an extract run reuses them). The test split is
never read.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from transferlab.engine.builders import make_backbone, make_datamodule
from transferlab.engine.execute import feature_datamodule


@dataclass
class CandidateFeatures:
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    source_logits: torch.Tensor | None  # the source classifier on train_x; None without one
    model_name: str
    weights: str  # as the backbone describes them
    image_size: int | None  # the input size the backbone saw (None for text)
    cache: str  # hit | built (both splits' features read from, or written to, the cache)
    seconds: float  # backbone, data and features


@torch.no_grad()
def _source_logits(backbone, features: torch.Tensor) -> torch.Tensor | None:
    head = getattr(backbone, "source_head", None)
    return None if head is None else head(features).float()


def candidate_features(cfg: DictConfig) -> CandidateFeatures:
    start = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    backbone = make_backbone(cfg, str(cfg.model.weights))
    images = make_datamodule(cfg, backbone)
    features = feature_datamodule(cfg, backbone, images)
    features.setup("fit")
    train_x = features.features("train")
    preprocess = getattr(backbone, "preprocess", None)
    return CandidateFeatures(
        train_x=train_x, train_y=features.labels("train"), val_x=features.eval_features("val"), val_y=features.labels("val"),
        num_classes=features.num_classes, source_logits=_source_logits(backbone, train_x),
        model_name=str(backbone.name), weights=str(backbone.weights),
        image_size=getattr(preprocess, "image_size", None),
        cache="hit" if features.cache.stats.hits and not features.cache.stats.built + features.cache.stats.rebuilt else "built",
        seconds=time.perf_counter() - start,
    )
