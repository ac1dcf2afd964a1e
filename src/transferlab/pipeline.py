"""Assemble a run from its config: backbone, data, plan, module, trainer. Shared by train and eval."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import hydra
import lightning.pytorch as pl
from omegaconf import DictConfig, OmegaConf

from transferlab.data.datamodule import TransferDataModule
from transferlab.data.transforms import AugmentConfig
from transferlab.finetune.callback import FinetuneCallback
from transferlab.finetune.optim import OptimConfig
from transferlab.finetune.plan import FinetunePlan, StrategyConfig
from transferlab.models.backbone import Backbone, build_backbone, count_params
from transferlab.models.heads import build_head
from transferlab.models.module import TransferModule

log = logging.getLogger(__name__)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def strategy_config(cfg: DictConfig) -> StrategyConfig:
    return StrategyConfig(**_plain(cfg.strategy))


def optim_config(cfg: DictConfig) -> OptimConfig:
    values = _plain(cfg.optim)
    values.pop("label_smoothing", None)
    return OptimConfig(**values)


def weights_for(cfg: DictConfig, strategy: StrategyConfig) -> str:
    return "none" if not strategy.pretrained else str(cfg.model.weights)


def make_backbone(cfg: DictConfig, weights: str | None = None) -> Backbone:
    strategy = strategy_config(cfg)
    return build_backbone(
        name=str(cfg.model.name),
        weights=weights if weights is not None else weights_for(cfg, strategy),
        image_size=cfg.data.get("image_size"),
        drop_path_rate=float(cfg.model.get("drop_path_rate") or 0.0),
    )


def make_datamodule(cfg: DictConfig, backbone: Backbone) -> TransferDataModule:
    d = cfg.data
    augment = AugmentConfig(**_plain(d.augment)) if d.get("augment") else None
    preprocess = backbone.preprocess
    if d.get("crop_pct") is not None:
        # Full-frame data (Fashion-MNIST's objects touch the border) loses parts to timm's eval crop.
        preprocess = replace(preprocess, crop_pct=float(d.crop_pct))
    return TransferDataModule(
        source=str(d.source),
        preprocess=preprocess,
        source_args=_plain(d.get("source_args")),
        samples_per_class=d.get("samples_per_class"),
        train_fraction=d.get("train_fraction"),
        val_per_class=d.get("val_per_class"),
        val_fraction=d.get("val_fraction"),
        batch_size=int(d.batch_size),
        eval_batch_size=int(d.get("eval_batch_size") or d.batch_size),
        num_workers=int(d.get("num_workers") or 0),
        seed=int(d.get("seed", cfg.seed)),
        augment=augment,
    )


@dataclass
class Run:
    backbone: Backbone
    datamodule: TransferDataModule
    plan: FinetunePlan
    module: TransferModule


def make_run(cfg: DictConfig, weights: str | None = None) -> Run:
    """Everything but the trainer. `weights` overrides the source (eval.py passes none)."""
    strategy = strategy_config(cfg)
    backbone = make_backbone(cfg, weights)
    datamodule = make_datamodule(cfg, backbone)
    datamodule.setup()
    head_cfg = cfg.model.head
    head = build_head(
        str(head_cfg.type), backbone.num_features, datamodule.num_classes,
        hidden=int(head_cfg.get("hidden") or 256), dropout=float(head_cfg.get("dropout") or 0.0),
    )
    plan = FinetunePlan.for_backbone(strategy, backbone.model)
    log.info("plan %s", plan.describe())
    module = TransferModule(
        backbone=backbone.model,
        head=head,
        plan=plan,
        optim=optim_config(cfg),
        num_classes=datamodule.num_classes,
        label_smoothing=float(cfg.optim.get("label_smoothing") or 0.0),
        channels_last=bool(cfg.model.get("channels_last", True)),
        tta_hflip=bool(cfg.data.get("eval_hflip", False)),
        extra_checkpoint_state={
            "config": OmegaConf.to_container(cfg, resolve=False),
            "classes": datamodule.classes,
            "weights": backbone.weights,
        },
    )
    log.info("parameters: %s total, %s trainable at start", f"{count_params(module):,}", f"{module.trainable_params():,}")
    return Run(backbone, datamodule, plan, module)


def make_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] = (), logger: bool = True) -> pl.Trainer:
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += [FinetuneCallback(), *extra_callbacks]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c] if logger else False
    return hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
