"""A run's class-imbalance options, from its config: which strategies they fit, the loss terms they
make from the run's data, and the record's `imbalance` entry saying what was used."""

from __future__ import annotations

import logging

from omegaconf import DictConfig, OmegaConf

from transferlab.data.class_balance import prior_of, skew_ratio
from transferlab.data.datamodule import TransferDataModule
from transferlab.errors import ConfigError
from transferlab.finetune.class_imbalance import NONE, LossTerms, class_weights, logit_offset
from transferlab.finetune.strategies import Strategy

log = logging.getLogger(__name__)


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def options_in_use(cfg: DictConfig) -> list[str]:
    """The imbalance options the config sets away from their defaults, as key=value."""
    optim, data = cfg.get("optim") or {}, cfg.get("data") or {}
    used = []
    weights = _plain(optim.get("class_weights", NONE))
    if weights not in (None, NONE):
        used.append(f"optim.class_weights={weights}")
    if optim.get("logit_adjustment", False):
        used.append("optim.logit_adjustment=true")
    if data.get("sampler", "natural") != "natural":
        used.append(f"data.sampler={data.get('sampler')}")
    return used


def check_imbalance(cfg: DictConfig, strategy: Strategy) -> None:
    """Refuse the options for a strategy whose classifier is fitted outside the training loop (an
    L-BFGS probe, a classical baseline): the loop's loss and loader are where they act."""
    used = options_in_use(cfg)
    probe = strategy.has_first_phase or strategy.has_last_phase or not strategy.fits or not strategy.trains_network
    if used and probe:
        raise ConfigError(
            f"{', '.join(used)} act on the training loop's cross-entropy and loader, and strategy={strategy.name} fits "
            "its classifier (or its start) outside the loop (an L-BFGS probe or a classical model), which takes "
            "neither: use a strategy that trains its head in the loop (partial, full, extract with strategy.solver=sgd; "
            "fixmatch with strategy.probe_init=false), or drop the options"
        )


def loss_terms(cfg: DictConfig, datamodule: TransferDataModule) -> LossTerms | None:
    """The training loss's class weights and logit offset, both from the training subset the loss sees."""
    optim = cfg.optim
    k = datamodule.num_classes
    weights = class_weights(_plain(optim.get("class_weights", NONE)), datamodule.splits["train"].labels, k)
    offset = None
    if optim.get("logit_adjustment"):
        counts = datamodule.train_counts()
        offset = logit_offset(prior_of(counts), float(optim.get("logit_adjustment_tau", 1.0)))
        if skew_ratio(counts) == 1.0:
            log.warning("optim.logit_adjustment=true on a balanced training subset changes nothing: its prior is "
                        "uniform, so the offset is the same for every class (docs/data.md#class-imbalance)")
    terms = LossTerms(weights, offset)
    return None if terms.plain else terms


def imbalance_entry(cfg: DictConfig, datamodule: TransferDataModule, terms: LossTerms | None) -> dict:
    """The record's `imbalance`: the options as set and as used, and how skewed the pool and the subset were."""
    optim, data = cfg.optim, cfg.data
    train_counts = datamodule.train_counts()
    return {
        "class_weights": _plain(optim.get("class_weights", NONE)),
        "class_weights_used": None if terms is None or terms.class_weights is None else [round(float(w), 6) for w in terms.class_weights],
        "logit_adjustment": bool(optim.get("logit_adjustment", False)),
        "logit_adjustment_tau": float(optim.get("logit_adjustment_tau", 1.0)),
        "logit_offset_used": None if terms is None or terms.logit_offset is None else [round(float(o), 6) for o in terms.logit_offset],
        "sampler": str(data.get("sampler", "natural")),
        "skew": {str(k): float(v) for k, v in (_plain(data.get("skew")) or {}).items()},
        "pool_counts": [int(c) for c in datamodule.pool_counts],
        "pool_skew": round(skew_ratio(datamodule.pool_counts), 4),
        "train_skew": round(skew_ratio(train_counts), 4),
        "balanced_subset_warning": datamodule.prior_warning,
    }
