"""Assemble a run from its config: backbone, data, plan, module, trainer. Shared by train and eval."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, replace

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.data.datamodule import TransferDataModule, rank_batch_size
from transferlab.data.feature_cache import FeatureCache, FeatureDataModule, state_dict_digest
from transferlab.data.transforms import AugmentConfig
from transferlab.errors import ConfigError
from transferlab.finetune.callback import FinetuneCallback
from transferlab.finetune.optim import OptimConfig
from transferlab.finetune.plan import FinetunePlan, StrategyConfig
from transferlab.models.backbone import Backbone, build_backbone, count_params
from transferlab.models.checkpoint import init_from_checkpoint, read_init_checkpoint
from transferlab.models.heads import build_head
from transferlab.models.module import TransferModule
from transferlab.sweep.device_pool import ENV_DEVICES

log = logging.getLogger(__name__)


def _plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def strategy_config(cfg: DictConfig) -> StrategyConfig:
    values = _plain(cfg.strategy)
    for key in FAST_PATH_KEYS:  # read by fast_path_config(), not part of the plan
        values.pop(key, None)
    return StrategyConfig(**values)


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


def make_run(cfg: DictConfig, weights: str | None = None, init: bool = True) -> Run:
    """Everything but the trainer. `weights` overrides the source (eval.py passes none). `init=False`
    skips model.init_from, for a run whose every tensor comes from a checkpoint anyway (resume)."""
    strategy = strategy_config(cfg)
    fast_path_config(cfg)  # a wrong strategy.feature_cache / solver fails before data and weights load
    init_path = cfg.model.get("init_from") if init else None
    init_ckpt = None
    if init_path:
        if not strategy.pretrained:
            raise ConfigError(f"model.init_from={init_path} with strategy={strategy.name}, which trains from random init: drop one of them")
        init_ckpt = read_init_checkpoint(init_path, str(cfg.model.name))  # before any data loads
        weights = "none"  # the checkpoint's tensors replace whatever model.weights would load
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
    if init_ckpt is not None:
        backbone.weights = init_from_checkpoint(
            module, init_ckpt, init_path, model_name=str(cfg.model.name), num_classes=datamodule.num_classes,
            classes=datamodule.classes, reset_head=bool(head_cfg.get("reset", False)),
        )
        module.extra_checkpoint_state["weights"] = backbone.weights
    log.info("parameters: %s total, %s trainable at start", f"{count_params(module):,}", f"{module.trainable_params():,}")
    return Run(backbone, datamodule, plan, module)


def make_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] = (), logger: bool = True) -> pl.Trainer:
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += [FinetuneCallback(), *extra_callbacks]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c] if logger else False
    trainer = instantiate_trainer(cfg, callbacks=callbacks, logger=loggers)
    _check_devices(cfg, trainer)
    return trainer


def instantiate_trainer(cfg: DictConfig, **kwargs) -> pl.Trainer:
    trainer_cfg = {k: v for k, v in _plain(cfg.trainer).items() if k not in TRAINER_EXTRA_KEYS}
    return hydra.utils.instantiate(trainer_cfg, **kwargs)


# Keys of the trainer config that are ours, not pl.Trainer's (they ride with the device choice).
TRAINER_EXTRA_KEYS = ("compile",)


def maybe_compile(cfg: DictConfig, module: TransferModule) -> None:
    """trainer.compile=true: torch.compile the backbone in place (state-dict keys unchanged, so
    checkpoints stay loadable without it). Pays off on GPUs after the first, slower steps."""
    if cfg.trainer.get("compile"):
        log.info("torch.compile: compiling the backbone (the first steps are slow)")
        module.backbone.compile()


def _check_devices(cfg: DictConfig, trainer: pl.Trainer) -> None:
    held = [d for d in os.environ.get(ENV_DEVICES, "").split(",") if d.strip()]
    if held and len(held) != trainer.num_devices:
        # A held device the trainer leaves idle is one no other sweep job can use.
        raise ConfigError(
            f"the device pool holds {len(held)} devices for this job ({','.join(held)}) but the trainer uses "
            f"{trainer.num_devices}: use trainer=ddp_cpu or trainer=ddp (they take the pool's count), or set "
            f"hydra.callbacks.device_pool.devices_per_job={trainer.num_devices}"
        )
    if trainer.world_size > 1:
        per_rank = rank_batch_size(int(cfg.data.batch_size), trainer.world_size, train=True)  # fails here, not in a rank
        log.info(
            "DDP: %d processes on %s; data.batch_size=%d is the global batch, %d per process",
            trainer.world_size, type(trainer.accelerator).__name__.replace("Accelerator", ""), int(cfg.data.batch_size), per_rank,
        )


# --- the feature cache and the L-BFGS probe (strategy=extract) -----------------------------------
FAST_PATH_KEYS = ("feature_cache", "solver", "probe_weight_decays", "probe_max_iter")
SOLVERS = ("sgd", "lbfgs")


@dataclass
class FastPathConfig:
    feature_cache: bool = False  # cache backbone features per split; the head trains on them
    solver: str = "sgd"  # sgd: the Lightning loop | lbfgs: full-batch L-BFGS probe (finetune/linear_probe.py)
    probe_weight_decays: list[float] | None = None  # lbfgs: the L2 grid, None = linear_probe.DEFAULT_GRID
    probe_max_iter: int = 1000  # lbfgs: iterations per penalty


def fast_path_config(cfg: DictConfig) -> FastPathConfig:
    s = cfg.strategy
    fast = FastPathConfig(
        feature_cache=bool(s.get("feature_cache") or False),
        solver=str(s.get("solver") or "sgd"),
        probe_weight_decays=list(s.probe_weight_decays) if s.get("probe_weight_decays") else None,
        probe_max_iter=int(s.get("probe_max_iter") or 1000),
    )
    name = str(s.name)
    if fast.solver not in SOLVERS:
        raise ConfigError(f"strategy.solver={fast.solver!r}: use sgd (the training loop) or lbfgs (a linear probe on cached features)")
    if fast.feature_cache and name != "extract":
        raise ConfigError(
            f"strategy.feature_cache=true needs a frozen backbone (strategy=extract), but strategy={name} trains it, "
            "so its features change at every step: drop strategy.feature_cache"
        )
    if fast.feature_cache and str(s.get("frozen_norm", "eval")) != "eval":
        raise ConfigError(
            f"strategy.feature_cache=true with strategy.frozen_norm={s.frozen_norm}: the backbone's norm layers would "
            "change during training, so cached features go stale; use frozen_norm=eval or strategy.feature_cache=false"
        )
    if fast.solver == "lbfgs" and not fast.feature_cache:
        raise ConfigError("strategy.solver=lbfgs fits a probe on cached features: set strategy.feature_cache=true (strategy=extract)")
    if fast.solver == "lbfgs" and str(cfg.model.head.type) != "linear":
        raise ConfigError(f"strategy.solver=lbfgs fits a linear head, but model.head.type={cfg.model.head.type}: use model.head.type=linear or strategy.solver=sgd")
    return fast


def _extraction_device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def make_feature_datamodule(cfg: DictConfig, run: Run) -> FeatureDataModule | None:
    """The cached-feature DataModule for this run, or None unless strategy.feature_cache=true.

    Switches `run.module` to take feature batches (the head alone); the backbone stays in it.
    """
    fast = fast_path_config(cfg)
    if not fast.feature_cache:
        return None
    images = run.datamodule
    if images.preprocess.augment.enabled:
        log.info(
            "strategy.feature_cache=true: train-time augmentation (data.augment) is off for this run; "
            "each split's features are computed once, with the eval preprocessing and the backbone in eval mode"
        )
    run.module.features_input = True
    backbone = run.module.backbone
    key_args = {
        "model": run.backbone.name,
        "weights": run.backbone.weights,
        "weights_digest": state_dict_digest(backbone),
        "preprocess": images.preprocess_cfg.as_dict(),
    }
    cache = FeatureCache(cfg.paths.cache_dir)
    log.info("feature cache: %s", cache.root)
    return FeatureDataModule(
        images, cache, backbone, key_args,
        eval_views=("image", "hflip") if run.module.tta_hflip else ("image",),
        device=_extraction_device(cfg),
        channels_last=run.module.channels_last,
    )
