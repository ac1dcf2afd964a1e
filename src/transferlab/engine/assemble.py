"""Assemble a run from its config: strategy, backbone, data, head, plan, module.

Shared by train.py, eval.py and the benchmarks; each part is built by engine/builders.py. The
order matters and is fixed here: the config is checked before anything loads; the backbone gets
its final weights (model.weights, or model.init_from) before the strategy prepares it (adapters,
L2-SP's starting point) and before its block groups are cut; the global seed is set first, so the
same config builds the same run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import lightning.pytorch as pl
from omegaconf import DictConfig

from transferlab.config.checks import check_config
from transferlab.data.datamodule import TransferDataModule
from transferlab.engine.builders import make_backbone, make_datamodule, make_head, make_module, make_strategy
from transferlab.engine.imbalance import check_imbalance, loss_terms
from transferlab.engine.module import TransferModule
from transferlab.engine.pretrain import tapt_encoder
from transferlab.engine.tasks import TAPT, task_of
from transferlab.errors import ConfigError
from transferlab.finetune.strategies import Strategy
from transferlab.models.backbone import Backbone
from transferlab.models.checkpoint import init_backbone_from, init_head_from, read_init_checkpoint

log = logging.getLogger(__name__)


def check_unlabeled(cfg: DictConfig, strategy: Strategy) -> None:
    """A strategy that learns from unlabelled images, refused before any data loads when there are none."""
    has_target = bool((cfg.data.get("target") or {}).get("source"))  # a target domain lends its images
    if strategy.needs_unlabeled and not cfg.data.get("unlabeled") and not has_target:
        raise ConfigError(f"strategy={strategy.name} learns from unlabelled images, and data.unlabeled is null: "
                          "set data.unlabeled=rest (the training pool's unused images), data.unlabeled=source, "
                          "or a target domain (data.target.source=<source>)")


@dataclass
class Run:
    backbone: Backbone
    datamodule: TransferDataModule
    strategy: Strategy
    module: TransferModule
    pretrain: dict | None = None  # task=tapt: the MLM phase the backbone came from


def make_run(cfg: DictConfig, weights: str | None = None, init: bool = True) -> Run:
    """Everything but the trainer. `weights` overrides the source (eval.py and resume pass "none": the
    checkpoint's tensors replace them). `init=False` skips model.init_from for the same reason."""
    check_config(cfg)
    strategy = make_strategy(cfg)
    check_unlabeled(cfg, strategy)
    check_imbalance(cfg, strategy)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    init_path = cfg.model.get("init_from") if init else None
    init_ckpt, pretrain = None, None
    # Resume and eval pass `weights` (the checkpoint holds the tuned encoder): only a fresh run pre-trains.
    if init and weights is None and task_of(cfg) == TAPT:
        init_path, pretrain = _tapt_encoder(cfg, strategy)
    if init_path:
        if not strategy.config.pretrained:
            raise ConfigError(f"model.init_from={init_path} with strategy={strategy.name}, which trains from random init: drop one of them")
        init_ckpt = read_init_checkpoint(init_path, str(cfg.model.name))  # before any data loads
        weights = "none"  # the checkpoint's tensors replace whatever model.weights would load
    if weights is None:
        # A classical baseline uses the model only for its input format (tokenizer, storage size).
        weights = str(cfg.model.weights) if strategy.config.pretrained and strategy.trains_network else "none"
    backbone = make_backbone(cfg, weights)
    strategy.check_modality(backbone.modality)
    if init_ckpt is not None:
        init_backbone_from(backbone.model, init_ckpt, init_path, model_name=str(cfg.model.name))
    strategy.prepare(backbone)
    if cfg.data.get("unlabeled") and not strategy.needs_unlabeled:
        log.warning("data.unlabeled=%s: strategy=%s learns from labelled images only, so the pool is not loaded",
                    cfg.data.unlabeled, strategy.name)
    datamodule = make_datamodule(cfg, backbone, strategy)
    datamodule.setup()
    head = make_head(cfg, backbone, datamodule.num_classes)
    if init_ckpt is not None:
        backbone.weights = init_head_from(
            head, init_ckpt, init_path, num_classes=datamodule.num_classes, classes=datamodule.classes,
            reset_head=bool(cfg.model.head.get("reset", False)),
        )
    module = make_module(cfg, backbone, head, strategy, datamodule.classes, loss_terms(cfg, datamodule))
    return Run(backbone, datamodule, strategy, module, pretrain)


def _tapt_encoder(cfg: DictConfig, strategy: Strategy) -> tuple[str, dict]:
    if not (strategy.config.pretrained and strategy.trains_network):
        raise ConfigError(f"task=tapt pre-trains the encoder that strategy={strategy.name} would not use: use task=classify with it")
    path, summary = tapt_encoder(cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)  # the classifier's draws, as without the phase
    return path, summary


def make_model(cfg: DictConfig, classes: list) -> TransferModule:
    """The trained network of a stored run, without its data: the architecture, adapters and head that
    `make_run` builds, with random tensors for the checkpoint to replace (predict, export)."""
    check_config(cfg)
    strategy = make_strategy(cfg)
    backbone = make_backbone(cfg, "none")
    strategy.prepare(backbone)
    return make_module(cfg, backbone, make_head(cfg, backbone, len(classes)), strategy, list(classes))
