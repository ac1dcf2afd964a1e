"""Feature extraction: the backbone is frozen (its norm statistics too); only the head trains.

Fast path (data/caches/feature_cache.py): the backbone runs once per split, not once per epoch, and the
head trains on the cached features (train-time augmentation is then off). `solver: lbfgs` fits the
head as an L2 logistic regression by full-batch L-BFGS instead, its penalty chosen on validation
(finetune/linear_probe.py): then the probe is the whole training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.linear_probe import probe_head
from transferlab.finetune.search_space import LogUniform
from transferlab.finetune.strategies.base import ProbeSettings, Strategy, StrategyConfig, register

SOLVERS = ("sgd", "lbfgs")


@dataclass
class ExtractConfig(ProbeSettings, StrategyConfig):
    lr: float = field(default=3e-3, metadata=rule("float", low=0.0, low_open=True))
    feature_cache: bool = field(default=True, metadata=rule("bool"))
    solver: str = field(default="sgd", metadata=rule("str", choices=SOLVERS, hint="sgd: the training loop; lbfgs: a linear probe on cached features"))


@register("extract")
class Extract(Strategy):
    Config = ExtractConfig
    search_space = {"lr": LogUniform(1e-3, 1e-1)}  # the sgd solver; lbfgs chooses its penalty on val itself
    trains_backbone = False

    def validate(self) -> None:
        c = self.config
        if c.feature_cache and c.frozen_norm != "eval":
            raise ConfigError(
                f"strategy.feature_cache=true with strategy.frozen_norm={c.frozen_norm}: the backbone's norm layers would "
                "change during training, so cached features go stale; use frozen_norm=eval or strategy.feature_cache=false"
            )
        if c.solver == "lbfgs" and not c.feature_cache:
            raise ConfigError("strategy.solver=lbfgs fits a probe on cached features: set strategy.feature_cache=true (strategy=extract)")

    def check_run(self, max_epochs: int | None, head_type: str) -> None:
        if self.config.solver == "lbfgs" and head_type != "linear":
            raise ConfigError(f"strategy.solver=lbfgs fits a linear head, but model.head.type={head_type}: use model.head.type=linear or strategy.solver=sgd")

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        return [None] * num_groups

    @property
    def has_first_phase(self) -> bool:
        return self.config.solver == "lbfgs"

    def first_phase(self, head, features):
        return probe_head(head, features, self.config.probe_weight_decays, self.config.probe_max_iter)

    @property
    def feature_cache(self) -> bool:
        return self.config.feature_cache

    @property
    def fits(self) -> bool:
        return self.config.solver != "lbfgs"

    @property
    def variant(self) -> str | None:
        return "lbfgs" if self.config.solver == "lbfgs" else None
