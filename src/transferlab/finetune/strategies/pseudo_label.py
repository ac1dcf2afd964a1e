"""Pseudo-labelling: self-training of a linear head on the frozen backbone's cached features.

The backbone is frozen and runs once per split, as for `strategy=extract strategy.solver=lbfgs`; the
unlabelled pool (`data.unlabeled`) is one more cached split. The head is the L-BFGS probe refitted
over rounds on labelled plus confidently pseudo-labelled features (finetune/self_training.py); the
round best on validation is the head tested.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.linear_probe import linear_layer_of, load_into_head
from transferlab.finetune.search_space import Uniform
from transferlab.finetune.self_training import self_train
from transferlab.finetune.strategies.base import ProbeSettings, Strategy, StrategyConfig, register

UNLABELED_SPLIT = "unlabeled"


@dataclass
class PseudoLabelConfig(ProbeSettings, StrategyConfig):
    rounds: int = field(default=2, metadata=rule("int", low=1, hint="no rounds at all is strategy=extract strategy.solver=lbfgs"))
    threshold: float = field(default=0.9, metadata=rule("float", low=0.0, high=1.0, high_open=True))
    per_class_cap: int | None = field(default=None, metadata=rule("int", low=1, nullable=True))
    per_class_fraction: float | None = field(default=None, metadata=rule("float", low=0.0, high=1.0, low_open=True, nullable=True))
    unlabeled_weight: float = field(default=1.0, metadata=rule("float", low=0.0, low_open=True))
    calibrate: bool = field(default=True, metadata=rule("bool"))


@register("pseudo_label")
class PseudoLabel(Strategy):
    Config = PseudoLabelConfig
    uses_optimizer = False
    search_space = {"threshold": Uniform(0.6, 0.98), "unlabeled_weight": Uniform(0.3, 1.0)}
    trains_backbone = False
    needs_unlabeled = True

    def validate(self) -> None:
        c = self.config
        if c.per_class_cap is not None and c.per_class_fraction is not None:
            raise ConfigError(f"strategy.per_class_cap={c.per_class_cap} and strategy.per_class_fraction={c.per_class_fraction} "
                              "are both set: set one of them to null")

    def check_run(self, max_epochs: int | None, head_type: str) -> None:
        if head_type != "linear":
            raise ConfigError(f"strategy=pseudo_label refits a linear probe, but model.head.type={head_type}: use model.head.type=linear")

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        return [None] * num_groups

    def per_class_cap(self, pool_size: int, num_classes: int) -> int | None:
        """The cap on each class's pseudo-labels per round; a fraction is of a balanced class's share of the pool."""
        c = self.config
        if c.per_class_fraction is not None:
            return max(1, math.floor(c.per_class_fraction * pool_size / num_classes))
        return c.per_class_cap

    @property
    def has_first_phase(self) -> bool:
        return True

    def first_phase(self, head, features):
        linear_layer_of(head)  # an MLP head fails here, before any feature is extracted
        features.setup("fit")
        c = self.config
        unlabeled = features.features(UNLABELED_SPLIT)
        cap = self.per_class_cap(len(unlabeled), features.num_classes)
        result = self_train(
            features.features("train"), features.labels("train"), features.eval_features("val"), features.labels("val"),
            unlabeled, features.num_classes, rounds=c.rounds, threshold=c.threshold, per_class_cap=cap,
            unlabeled_weight=c.unlabeled_weight, calibrate=c.calibrate, grid=c.probe_weight_decays, max_iter=c.probe_max_iter,
        )
        result.settings = {"threshold": c.threshold, "calibrate": c.calibrate, "per_class_cap": cap, "unlabeled_weight": c.unlabeled_weight}
        load_into_head(head, result.probe)
        return result

    @property
    def feature_cache(self) -> bool:
        return True

    @property
    def fits(self) -> bool:
        return False
