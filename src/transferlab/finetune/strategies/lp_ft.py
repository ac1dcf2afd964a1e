"""LP-FT (Kumar et al. 2022, "Fine-Tuning can Distort Pretrained Features and Underperform
Out-of-Distribution"): first a linear probe, fitted by L-BFGS on cached features, initialises the
head; then every block group fine-tunes at a low lr. A head that already fits the features sends
small gradients into the backbone at the start, so fine-tuning distorts the features less than
with a random head."""

from __future__ import annotations

from dataclasses import dataclass, field

from transferlab.config.checks import rule
from transferlab.errors import ConfigError
from transferlab.finetune.linear_probe import probe_head
from transferlab.finetune.search_space import LogUniform, Uniform
from transferlab.finetune.strategies.base import LayerDecay, ProbeSettings, Strategy, StrategyConfig, register


@dataclass
class LpFtConfig(ProbeSettings, LayerDecay, StrategyConfig):
    lr: float = field(default=2e-4, metadata=rule("float", low=0.0, low_open=True))  # the fine-tuning phase's lr
    # The probe fits features made with the pre-trained norm statistics; statistics that move with
    # the new data's batches change those features under the head at once.
    train_norm_stats: bool = field(default=False, metadata=rule("bool"))


@register("lp_ft")
class LpFt(Strategy):
    Config = LpFtConfig
    search_space = {"lr": LogUniform(3e-5, 3e-3), "decay": Uniform(0.3, 1.0)}

    def check_run(self, max_epochs: int | None, head_type: str) -> None:
        if head_type != "linear":
            raise ConfigError(f"strategy=lp_ft starts from a linear probe, but model.head.type={head_type}: use model.head.type=linear")

    def norm_layers_train(self) -> bool:
        return self.config.train_norm_stats

    @property
    def has_first_phase(self) -> bool:
        return True

    def first_phase(self, head, features):
        return probe_head(head, features, self.config.probe_weight_decays, self.config.probe_max_iter)
