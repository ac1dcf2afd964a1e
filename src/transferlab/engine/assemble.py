"""Assemble a run from its config: strategy, backbone, data, head, plan, module, trainer.

Shared by train.py, eval.py and the benchmarks. The order matters and is fixed here: the config is
checked before anything loads; the backbone gets its final weights (model.weights, or
model.init_from) before the strategy prepares it (adapters, L2-SP's starting point) and before its
block groups are cut; the global seed is set first, so the same config builds the same run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import hydra
import lightning.pytorch as pl
import torch
from omegaconf import DictConfig, OmegaConf

from transferlab.config.checks import check_config
from transferlab.data.datamodule import TransferDataModule
from transferlab.data.feature_cache import FeatureCache, FeatureDataModule, state_dict_digest
from transferlab.data.loaders import rank_batch_size
from transferlab.data.storage import Storage
from transferlab.data.token_cache import CachedTokenize, TokenCache
from transferlab.data.transforms import AugmentConfig
from transferlab.errors import ConfigError
from transferlab.finetune.callback import FinetuneCallback
from transferlab.finetune.optim import OptimConfig
from transferlab.finetune.plan import FinetunePlan
from transferlab.finetune.strategies import Strategy, build_strategy
from transferlab.engine.module import TransferModule
from transferlab.engine.tasks import TAPT, task_of
from transferlab.models.backbone import Backbone, backbone_kind, build_backbone, count_params, kind_name
from transferlab.models.checkpoint import init_backbone_from, init_head_from, read_init_checkpoint
from transferlab.models.heads import build_head
from transferlab.utils.ddp_layout import check_process_layout
from transferlab.utils.devices import held_devices

log = logging.getLogger(__name__)


def plain(node) -> dict:
    return OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node or {})


def debug_run(cfg: DictConfig) -> bool:
    """fast_dev_run or overfit_batches: a check that the run works, not an experiment."""
    t = cfg.trainer
    return bool(t.get("fast_dev_run")) or bool(t.get("overfit_batches"))


def planned_epochs(cfg: DictConfig) -> int | None:
    """The epochs the run will train, for the schedule checks; None for debug runs."""
    return None if debug_run(cfg) else int(cfg.trainer.max_epochs)


def make_strategy(cfg: DictConfig) -> Strategy:
    strategy = build_strategy(plain(cfg.strategy))
    strategy.check_run(planned_epochs(cfg), str(cfg.model.head.type))
    return strategy


def check_unlabeled(cfg: DictConfig, strategy: Strategy) -> None:
    """A strategy that learns from unlabelled images, refused before any data loads when there are none."""
    has_target = bool((cfg.data.get("target") or {}).get("source"))  # a target domain lends its images
    if strategy.needs_unlabeled and not cfg.data.get("unlabeled") and not has_target:
        raise ConfigError(f"strategy={strategy.name} learns from unlabelled images, and data.unlabeled is null: "
                          "set data.unlabeled=rest (the training pool's unused images), data.unlabeled=source, "
                          "or a target domain (data.target.source=<source>)")


def optim_config(cfg: DictConfig) -> OptimConfig:
    values = plain(cfg.optim)
    values.pop("label_smoothing", None)
    if values.get("fused") is None:  # auto: the backbone kind's choice
        values["fused"] = backbone_kind(kind_name(cfg.model)).fused_adamw
    return OptimConfig(**values)


def make_backbone(cfg: DictConfig, weights: str) -> Backbone:
    # A model key left at ??? is the user's to set: fail on it here, by name, not as the string "???".
    model = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=True)
    return build_backbone(kind_name(model), model=model, data=plain(cfg.data), weights=weights)


def make_datamodule(cfg: DictConfig, backbone: Backbone, strategy: Strategy | None = None) -> TransferDataModule:
    augment = AugmentConfig(**plain(cfg.data.augment)) if cfg.data.get("augment") else None
    datamodule = datamodule_for(cfg, backbone.batch_transform(augment), backbone.storage_size, make_tokenize(cfg, backbone))
    if strategy is not None:  # a strategy that trains on unlabelled batches beside the labelled ones
        datamodule.unlabeled_ratio, datamodule.strong_augment = strategy.unlabeled_ratio, strategy.strong_augment
        if not strategy.needs_unlabeled and datamodule.unlabeled != "target":
            datamodule.unlabeled = None  # make_run said so; a target domain still lends its test split
    return datamodule


def make_tokenize(cfg: DictConfig, backbone: Backbone):
    """A text backbone's tokenize for the sources, through the token cache unless data.token_cache=false."""
    tokenize = getattr(backbone, "tokenize", None)
    identity = getattr(backbone, "tokenizer_identity", None)  # a key for the cache; without one, no cache
    if tokenize is None or identity is None or not cfg.data.get("token_cache", True):
        return tokenize
    cache = TokenCache(cfg.paths.cache_dir)
    log.info("token cache: %s", cache.root / "tokens")
    return CachedTokenize(tokenize, identity(), backbone.max_length, cache)


def datamodule_for(cfg: DictConfig, transform, storage_size: int, tokenize=None) -> TransferDataModule:
    """The run's data with a given transform (eval.py on an exported model has no backbone to ask)."""
    d = cfg.data
    return TransferDataModule(
        source=str(d.source),
        transform=transform,
        source_args=plain(d.get("source_args")),
        storage_size=int(d.get("store_size") or storage_size),
        storage=storage_for(cfg),
        stream_workers=int(d.get("stream", {}).get("num_workers") or 0),
        samples_per_class=d.get("samples_per_class"),
        train_fraction=d.get("train_fraction"),
        val_per_class=d.get("val_per_class"),
        val_fraction=d.get("val_fraction"),
        batch_size=int(d.batch_size),
        eval_batch_size=int(d.get("eval_batch_size") or d.batch_size),
        num_workers=int(d.get("num_workers") or 0),
        seed=int(d.get("seed", cfg.seed)),
        tokenize=tokenize,
        # Off where the key is missing: a run from before it existed resumes in the order it began with.
        bucket_by_length=bool(d.get("bucket_by_length", False)),
        bucket_size_multiplier=int(d.get("bucket_size_multiplier") or 50),
        unlabeled=d.get("unlabeled"),
        unlabeled_max=d.get("unlabeled_max"),
        unlabeled_column=str(d.get("unlabeled_column") or "text"),
        target=plain(d.get("target")) if (d.get("target") or {}).get("source") else None,
    )


def storage_for(cfg: DictConfig) -> Storage:
    """data.storage and its keys; a run from before they existed is held in memory."""
    d, stream = cfg.data, plain(cfg.data.get("stream")) or {}
    return Storage(
        mode=str(d.get("storage") or "memory"), memory_budget=d.get("memory_budget") or 0.25,
        cache_dir=str(cfg.paths.cache_dir), stream_dir=stream.get("dir"), chunk_bytes=str(stream.get("chunk_bytes") or "64MB"),
        optimize_workers=stream.get("optimize_workers"),
    )


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
    head = _make_head(cfg, backbone, datamodule.num_classes)
    if init_ckpt is not None:
        backbone.weights = init_head_from(
            head, init_ckpt, init_path, num_classes=datamodule.num_classes, classes=datamodule.classes,
            reset_head=bool(cfg.model.head.get("reset", False)),
        )
    module = _make_module(cfg, backbone, head, strategy, datamodule.classes)
    return Run(backbone, datamodule, strategy, module, pretrain)


def _tapt_encoder(cfg: DictConfig, strategy: Strategy) -> tuple[str, dict]:
    if not (strategy.config.pretrained and strategy.trains_network):
        raise ConfigError(f"task=tapt pre-trains the encoder that strategy={strategy.name} would not use: use task=classify with it")
    from transferlab.engine.pretrain import tapt_encoder  # it builds its data and trainer with this module's helpers

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
    return _make_module(cfg, backbone, _make_head(cfg, backbone, len(classes)), strategy, list(classes))


def _make_head(cfg: DictConfig, backbone: Backbone, num_classes: int):
    head_cfg = cfg.model.head
    return build_head(
        str(head_cfg.type), backbone.num_features, num_classes,
        hidden=int(head_cfg.get("hidden") or 256), dropout=float(head_cfg.get("dropout") or 0.0),
    )


def _make_module(cfg: DictConfig, backbone: Backbone, head, strategy: Strategy, classes: list) -> TransferModule:
    plan = FinetunePlan(strategy, backbone.block_groups(), head, backbone_lr_scale=float(cfg.model.get("backbone_lr_scale", 1.0)))
    plan.check_reachable(planned_epochs(cfg))
    log.info("plan %s", plan.describe())
    module = TransferModule(
        backbone=backbone,
        head=head,
        plan=plan,
        optim=optim_config(cfg),
        num_classes=len(classes),
        label_smoothing=float(cfg.optim.get("label_smoothing") or 0.0),
        tta_hflip=bool(cfg.data.get("eval_hflip", False)),
        extra_checkpoint_state={
            "config": OmegaConf.to_container(cfg, resolve=False),
            "classes": classes,
            "weights": backbone.weights,
        },
    )
    log.info("parameters: %s total, %s trainable at start", f"{count_params(module):,}", f"{module.trainable_params():,}")
    return module


# --- the trainer ---------------------------------------------------------------------------------
# Keys of the trainer config that are ours, not pl.Trainer's (they ride with the device choice).
TRAINER_EXTRA_KEYS = ("compile", "tasks_per_node")


def instantiate_trainer(cfg: DictConfig, **kwargs) -> pl.Trainer:
    trainer_cfg = {k: v for k, v in plain(cfg.trainer).items() if k not in TRAINER_EXTRA_KEYS}
    return hydra.utils.instantiate(trainer_cfg, **kwargs)


def make_trainer(cfg: DictConfig, extra_callbacks: list[pl.Callback] = (), logger: bool = True) -> pl.Trainer:
    callbacks = [hydra.utils.instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    callbacks += [FinetuneCallback(), *extra_callbacks]
    loggers = [hydra.utils.instantiate(c) for c in (cfg.get("logger") or {}).values() if c] if logger else False
    trainer = instantiate_trainer(cfg, callbacks=callbacks, logger=loggers)
    _check_devices(cfg, trainer)
    return trainer


def finetune_callback(trainer: pl.Trainer) -> FinetuneCallback:
    return next(cb for cb in trainer.callbacks if isinstance(cb, FinetuneCallback))


def maybe_compile(cfg: DictConfig, module: TransferModule) -> None:
    """trainer.compile=true: torch.compile the backbone in place (state-dict keys unchanged, so
    checkpoints stay loadable without it). Pays off on GPUs after the first, slower steps. A
    string names torch.compile's backend instead of its default (`eager` traces without code
    generation: scripts/gpu_check.py's CPU smoke run)."""
    choice = cfg.trainer.get("compile")
    if not choice:
        return
    backend = choice if isinstance(choice, str) else "inductor"
    log.info("torch.compile (%s): compiling the backbone (the first steps are slow)", backend)
    module.backbone.compile(backend=backend)


def _check_devices(cfg: DictConfig, trainer: pl.Trainer) -> None:
    check_process_layout(trainer)
    held = held_devices()
    if held and len(held) != trainer.num_devices:
        # A held device the trainer leaves idle is one no other sweep job can use.
        raise ConfigError(
            f"the device pool holds {len(held)} devices for this job ({','.join(held)}) but the trainer uses "
            f"{trainer.num_devices}: use trainer=ddp_cpu or trainer=ddp (they take the pool's count), or set "
            f"hydra.callbacks.device_pool.devices_per_job={trainer.num_devices}"
        )
    if trainer.world_size > 1:
        per_rank = rank_batch_size(int(cfg.data.batch_size), trainer.world_size, train=True)  # fails here, not in a rank
        where = type(trainer.accelerator).__name__.replace("Accelerator", "")
        if trainer.num_nodes > 1:
            where += f", {trainer.num_nodes} nodes of {trainer.num_devices}"
        log.info(
            "DDP: %d processes on %s; data.batch_size=%d is the global batch, %d per process",
            trainer.world_size, where, int(cfg.data.batch_size), per_rank,
        )


# --- cached features (extract's fast path, the probe of lp_ft and extract's lbfgs) ----------------
def _extraction_device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def make_feature_datamodule(cfg: DictConfig, run: Run) -> FeatureDataModule:
    """The frozen backbone's eval features of every split, cached under paths.cache_dir."""
    images = run.datamodule
    if run.strategy.feature_cache and getattr(getattr(images.transform, "augment", None), "enabled", False):
        log.info(
            "strategy.feature_cache=true: train-time augmentation (data.augment) is off for this run; "
            "each split's features are computed once, with the eval preprocessing and the backbone in eval mode"
        )
    key_args = {
        "model": run.backbone.name,
        "weights": run.backbone.weights,
        "weights_digest": state_dict_digest(run.backbone.model),
        "preprocess": run.backbone.input_spec(),
    }
    cache = FeatureCache(cfg.paths.cache_dir)
    log.info("feature cache: %s", cache.root)
    return FeatureDataModule(
        images, cache, run.backbone, key_args,
        eval_views=("image", "hflip") if run.module.tta_hflip else ("image",),
        device=_extraction_device(cfg),
    )
