"""The run's parts built from its config, one function each: strategy, backbone, data, head, the
LightningModule and the optimizer config. engine/assemble.py puts them together in their fixed
order (make_run); engine/pretrain.py and eval.py use them alone.
"""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from transferlab.config.tuning import SEARCH_ARM
from transferlab.data.caches.token_cache import CachedTokenize, TokenCache
from transferlab.data.datamodule import TransferDataModule
from transferlab.data.images.storage import Storage
from transferlab.data.images.transforms import AugmentConfig
from transferlab.finetune.class_imbalance import LossTerms
from transferlab.finetune.optim import OptimConfig
from transferlab.finetune.plan import FinetunePlan
from transferlab.finetune.strategies import Strategy, build_strategy
from transferlab.engine.module import TransferModule
from transferlab.models.backbone import Backbone, build_backbone, count_params, find_kind, kind_name
from transferlab.models.heads import build_head

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


def optim_config(cfg: DictConfig) -> OptimConfig:
    values = plain(cfg.optim)
    for loss_key in ("label_smoothing", "class_weights", "logit_adjustment", "logit_adjustment_tau"):  # the loss's, not the optimizer's
        values.pop(loss_key, None)
    if values.get("fused") is None:  # auto: the backbone kind's choice
        kind = find_kind(kind_name(cfg.model))
        values["fused"] = kind is not None and kind.fused_adamw
    return OptimConfig(**values)


def make_backbone(cfg: DictConfig, weights: str) -> Backbone:
    # A model key left at ??? is the user's to set: fail on it here, by name, not as the string "???".
    model = OmegaConf.to_container(cfg.model, resolve=True, throw_on_missing=True)
    return build_backbone(kind_name(model), model=model, data=plain(cfg.data), weights=weights)


def make_datamodule(cfg: DictConfig, backbone: Backbone, strategy: Strategy | None = None) -> TransferDataModule:
    """The run's data for `backbone`; with `strategy`, the unlabelled pool as it asks (its batches
    beside the labelled ones, or no pool at all for a strategy that learns from labels alone)."""
    augment = AugmentConfig(**plain(cfg.data.augment)) if cfg.data.get("augment") else None
    pool = {} if strategy is None else dict(unlabeled_ratio=strategy.unlabeled_ratio, strong_augment=strategy.strong_augment,
                                            use_unlabeled=strategy.needs_unlabeled)
    return datamodule_for(cfg, backbone.batch_transform(augment), backbone.storage_size, make_tokenize(cfg, backbone), **pool)


def make_tokenize(cfg: DictConfig, backbone: Backbone):
    """A text backbone's tokenize for the sources, through the token cache unless data.token_cache=false."""
    tokenize = getattr(backbone, "tokenize", None)
    identity = getattr(backbone, "tokenizer_identity", None)  # a key for the cache; without one, no cache
    if tokenize is None or identity is None or not cfg.data.get("token_cache", True):
        return tokenize
    cache = TokenCache(cfg.paths.cache_dir)
    log.info("token cache: %s", cache.root / "tokens")
    return CachedTokenize(tokenize, identity(), backbone.max_length, cache)


def datamodule_for(cfg: DictConfig, transform, storage_size: int, tokenize=None, *, unlabeled_ratio: int = 0,
                   strong_augment=None, use_unlabeled: bool = True) -> TransferDataModule:
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
        unlabeled_ratio=unlabeled_ratio,
        strong_augment=strong_augment,
        use_unlabeled=use_unlabeled,
        # Natural and whole where the keys are missing: a run from before them resumes on its own data.
        sampler=str(d.get("sampler") or "natural"),
        skew=plain(d.get("skew")) or None,
        seal_test=OmegaConf.select(cfg, "tune.arm") == SEARCH_ARM,
    )


def storage_for(cfg: DictConfig) -> Storage:
    """data.storage and its keys; a run from before they existed is held in memory."""
    d, stream = cfg.data, plain(cfg.data.get("stream")) or {}
    return Storage(
        mode=str(d.get("storage") or "memory"), memory_budget=d.get("memory_budget") or 0.25,
        cache_dir=str(cfg.paths.cache_dir), stream_dir=stream.get("dir"), chunk_bytes=str(stream.get("chunk_bytes") or "64MB"),
        optimize_workers=stream.get("optimize_workers"),
    )


def make_head(cfg: DictConfig, backbone: Backbone, num_classes: int):
    head_cfg = cfg.model.head
    return build_head(
        str(head_cfg.type), backbone.num_features, num_classes,
        hidden=int(head_cfg.get("hidden") or 256), dropout=float(head_cfg.get("dropout") or 0.0),
    )


def make_module(cfg: DictConfig, backbone: Backbone, head, strategy: Strategy, classes: list,
                loss_terms: LossTerms | None = None) -> TransferModule:
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
        loss_terms=loss_terms,
        extra_checkpoint_state={
            "config": OmegaConf.to_container(cfg, resolve=False),
            "classes": classes,
            "weights": backbone.weights,
        },
    )
    log.info("parameters: %s total, %s trainable at start", f"{count_params(module):,}", f"{module.trainable_params():,}")
    return module
