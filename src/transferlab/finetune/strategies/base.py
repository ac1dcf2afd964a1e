"""The strategy interface: one config dataclass and one class per strategy, registered by name.

A strategy says which block groups train from which epoch and at which learning rate (the
schedule: a pure function of step and config, every optimizer group built up front), and may hook
into the run at four more places, each optional with a default that does nothing:

- `prepare(backbone)`: change the network before training (inject adapters: lora.py);
- `state_module()` and `extra_loss(module)`: tensors kept in checkpoints and a loss term added to
  the task loss (L2-SP's pull towards the pre-trained weights: l2_sp.py);
- `first_phase(head, features)`: fit something before the training loop (an L-BFGS probe on
  cached features that initialises the head: lp_ft.py, extract.py);
- `feature_loss(features, labels)` with `head_on_detached_features`, and `last_phase(head,
  features)`: a loss on the backbone's features instead of the head's gradient, and a head refitted
  on the tuned backbone's features after the loop (setfit.py);
- `feature_cache` / `fits`: whether the loop runs on cached features, and whether it runs at all;
- `unlabeled_ratio`, `strong_augment` and `unlabeled_loss(module, features, views)`: training steps
  that carry a batch of the unlabelled pool beside the labelled one (data/unlabeled/batches.py),
  its views' features computed in the same forward pass, and a loss on them (fixmatch.py, dann.py).
  `state_module()`'s parameters, if it has any, train with the head (DANN's domain classifier).

`ClassicalStrategy` is the other kind: a baseline with no network (tfidf_lr, pixel_lr) that fits a
model on the run's splits for the engine to score.

Adding a strategy is a module in this package plus configs/strategy/<name>.yaml: the registry
finds the module, and the YAML's keys are the fields of its config dataclass (tests check that
the two agree). docs/architecture.md walks through an example.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import nn

from transferlab.config.checks import check_dataclass, rule
from transferlab.errors import ConfigError
from transferlab.finetune.schedules import Clock, warmup_cosine
from transferlab.finetune.search_space import SHARED_SPACE, Distribution

if TYPE_CHECKING:
    from transferlab.finetune.plan import ParamUnit

NORM_POLICIES = ("eval", "train", "affine_only")


@dataclass
class StrategyConfig:
    """The knobs every strategy has."""

    name: str = ""
    lr: float = field(default=2e-3, metadata=rule("float", low=0.0, low_open=True))  # the head's lr; groups scale from it
    # Norm layers in groups that do not train: eval (statistics frozen) | train (statistics update) |
    # affine_only (scales and shifts train, statistics frozen).
    frozen_norm: str = field(default="eval", metadata=rule("str", choices=NORM_POLICIES))
    pretrained: bool = field(default=True, metadata=rule("bool"))  # false: the backbone starts from random init


@dataclass
class LayerDecay:
    """Discriminative lrs: block group i below the head trains at lr * decay**i."""

    decay: float = field(default=1.0, metadata=rule("float", low=0.0, high=1.0, low_open=True, hint="1.0 is one lr for every group"))


@dataclass
class TopGroups:
    """How many block groups train, counted from the top (null: all of them)."""

    unfreeze_top: int | None = field(default=None, metadata=rule("int", low=0, nullable=True))


def top_k(unfreeze_top: int | None, num_groups: int) -> int:
    """How many groups `unfreeze_top` means on a backbone of `num_groups` (None: all)."""
    if unfreeze_top is None:
        return num_groups
    if not 0 <= unfreeze_top <= num_groups:
        raise ConfigError(
            f"strategy.unfreeze_top={unfreeze_top} but this backbone has {num_groups} block groups: use 0..{num_groups} (or null for all)"
        )
    return unfreeze_top


def top_groups_from(unfreeze_top: int | None, num_groups: int, epoch: int) -> list[int | None]:
    """The schedule that trains the top `unfreeze_top` groups from `epoch` on, and no other."""
    top = top_k(unfreeze_top, num_groups)
    return [epoch if i >= num_groups - top else None for i in range(num_groups)]


@dataclass
class ProbeSettings:
    """The L-BFGS linear probe on cached features (finetune/linear_probe.py)."""

    probe_weight_decays: list[float] | None = field(default=None, metadata=rule("float_list", low=0.0, nullable=True))
    probe_max_iter: int = field(default=1000, metadata=rule("int", low=1))


class Strategy:
    """Defaults: every group trains from epoch 0 with layer-wise decay, optim's warm-up + cosine."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = StrategyConfig
    # False: a classical baseline (ClassicalStrategy below) that fits no network at all.
    trains_network: ClassVar[bool] = True
    # Whether the strategy means to train backbone parameters (extract does not): a run that would
    # train none of them (unfreeze_top=0, milestones past the last epoch) is refused, not recorded
    # as this strategy.
    trains_backbone: ClassVar[bool] = True
    # Whether its training runs the configured optimiser (optim.*); pseudo_label fits probes only.
    uses_optimizer: ClassVar[bool] = True
    # Whether it learns from an unlabelled pool (data.unlabeled): a run without one is refused.
    needs_unlabeled: ClassVar[bool] = False
    # The inputs it works on (fixmatch's strong view is made of image operations).
    modalities: ClassVar[tuple[str, ...]] = ("image", "text")
    # What a tuning search varies (finetune/search_space.py), keys relative to `strategy.`. A
    # strategy whose own fit already chooses on validation (an L-BFGS penalty) may leave it empty.
    search_space: ClassVar[dict[str, "Distribution"]] = {}

    def __init__(self, config: Any):
        self.config = config

    @classmethod
    def tuning_space(cls) -> dict[str, "Distribution"]:
        """The whole search space by config key: the strategy's knobs, and the optimiser's for a
        strategy whose training loop runs an optimiser."""
        own = {f"strategy.{k}": v for k, v in cls.search_space.items()}
        return {**own, **(SHARED_SPACE if cls.trains_network and cls.uses_optimizer else {})}

    # --- building ----------------------------------------------------------------------------
    @classmethod
    def from_values(cls, values: dict) -> "Strategy":
        names = [f.name for f in dataclasses.fields(cls.Config)]
        unknown = sorted(set(values) - set(names))
        if unknown:
            others = sorted(n for n, s in STRATEGIES.items() if any(k in {f.name for f in dataclasses.fields(s.Config)} for k in unknown))
            where = f"; strategies that have it: {', '.join(others)}" if others else ""
            raise ConfigError(
                f"strategy={cls.name} has no knob {', '.join(f'strategy.{k}' for k in unknown)} (its knobs: "
                f"{', '.join(n for n in names if n != 'name')}){where}: drop it, or choose a strategy that has it"
            )
        config = cls.Config(**values)
        check_dataclass(config, "strategy")
        strategy = cls(config)
        strategy.validate()
        return strategy

    def validate(self) -> None:
        """Checks across knobs (ranges of single knobs are the fields' rules)."""

    def check_run(self, max_epochs: int | None, head_type: str) -> None:
        """Checks against the rest of the run, before any data or weights load."""

    def check_modality(self, modality: str) -> None:
        if modality not in self.modalities:
            raise ConfigError(f"strategy={self.name} works on {' and '.join(self.modalities)}s, and this run's model takes "
                              f"{modality}s: use another strategy (partial, full, lora, ...), or a {self.modalities[0]} model and data")

    def schedule_fix(self, max_epochs: int) -> str:
        """What to change when the schedule would leave groups untrained (FinetunePlan.check_reachable)."""
        return f"raise trainer.max_epochs (now {max_epochs}) or choose another strategy"

    # --- the schedule ------------------------------------------------------------------------
    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        """Per block group, bottom to top: the first epoch it trains in, or None for never."""
        return [0] * num_groups

    def lr_scale(self, group_index: int, num_groups: int) -> float:
        # The head is depth 0; the top backbone group is depth 1.
        return getattr(self.config, "decay", 1.0) ** (num_groups - group_index)

    def unfreeze_factor(self, unit: "ParamUnit", epoch: float) -> float:
        """Multiplier on a unit's lr at a (fractional) epoch: 0 before it is unfrozen."""
        return 0.0 if epoch < unit.unfreeze_epoch else 1.0

    def lr_multiplier(self, unit: "ParamUnit", step: int, clock: Clock) -> float:
        """The unit's lr at `step`, as a multiple of lr * its scale."""
        return warmup_cosine(step, clock) * self.unfreeze_factor(unit, step / clock.steps_per_epoch)

    def trainable(self, name: str, param: nn.Parameter, is_norm: bool) -> bool:
        """Which parameters of a group train when the group does (all; lora: its adapters).
        `is_norm`: the parameter belongs to one of the group's norm layers."""
        return True

    def norm_layers_train(self) -> bool:
        """Whether a training group's norm layers are in train mode (batch statistics, running
        averages updating) or keep the pre-trained statistics (lora; lp_ft, whose probe was fitted
        on features made with them). Their scales and shifts train either way if `trainable` says so."""
        return True

    def weight_decay(self, unit: "ParamUnit", default: float) -> float:
        return default

    # --- hooks -------------------------------------------------------------------------------
    def prepare(self, backbone) -> None:
        """Change the backbone before its groups are cut (adapters)."""

    def deployable(self, model: nn.Module) -> nn.Module:
        """The trained backbone as a plain network of its architecture (adapters folded in), for
        export. May change `model` in place; callers pass a copy."""
        return model

    def state_module(self) -> nn.Module | None:
        """Tensors of the strategy's own that checkpoints must hold (registered on the model)."""
        return None

    def extra_loss(self, module) -> torch.Tensor | None:
        """A term added to the task loss at each training step."""
        return None

    @property
    def unlabeled_ratio(self) -> int:
        """Unlabelled images per labelled one in each training batch; 0: the loop sees labelled batches only."""
        return 0

    @property
    def strong_augment(self):
        """A StrongAugment (data/images/strong_augment.py) for a second, strongly augmented unlabelled view; None: one view."""
        return None

    def unlabeled_loss(self, module, features: torch.Tensor, views: list[torch.Tensor]) -> torch.Tensor | None:
        """A term from the unlabelled views' pooled features (weak first, then strong), given the
        labelled batch's `features`; `module` runs the head (`module.head_logits`) and logs."""
        return None

    def feature_loss(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
        """A term on the backbone's pooled features of a training batch, added to the task loss."""
        return None

    @property
    def head_on_detached_features(self) -> bool:
        """Whether the head's loss stops at the features, so only `feature_loss` trains the backbone."""
        return False

    @property
    def has_first_phase(self) -> bool:
        return False

    def first_phase(self, head: nn.Module, features) -> Any:
        """Runs before the loop on cached eval features (a FeatureDataModule); returns its summary (or None)."""
        return None

    @property
    def has_last_phase(self) -> bool:
        return False

    def last_phase(self, head: nn.Module, features) -> Any:
        """Runs after the loop on eval features of the tuned backbone (its best checkpoint); returns
        its summary. The head it leaves is the one tested."""
        return None

    @property
    def feature_cache(self) -> bool:
        """Whether the training loop itself runs on cached backbone features (a frozen backbone)."""
        return False

    @property
    def fits(self) -> bool:
        """Whether the Lightning training loop runs (a probe alone is the whole of extract's lbfgs)."""
        return True

    # --- for the record ----------------------------------------------------------------------
    @property
    def variant(self) -> str | None:
        """A label for a variant that is another method under this name (shown in reports)."""
        return None

    def knobs(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self.config).items() if k != "name"}


class TopGroupsStrategy(Strategy):
    """A strategy whose config has `TopGroups`: the top `unfreeze_top` block groups train, all of them
    from `unfreeze_epoch` on (partial, lora, fixmatch, dann from 0; two_phase after its head phase)."""

    @property
    def unfreeze_epoch(self) -> int:
        return 0

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        return top_groups_from(self.config.unfreeze_top, num_groups, self.unfreeze_epoch)


class ClassicalStrategy(Strategy):
    """A baseline fitted without a network (finetune/classical.py): no loop, no backbone training;
    `fit_classical` returns a model the engine scores on val and test."""

    trains_backbone = False
    trains_network: ClassVar[bool] = False
    modality: ClassVar[str] = ""  # the inputs it reads: image | text

    def unfreeze_epochs(self, num_groups: int) -> list[int | None]:
        return [None] * num_groups

    @property
    def fits(self) -> bool:
        return False

    def check_modality(self, modality: str) -> None:
        if modality != self.modality:
            others = sorted(n for n, s in STRATEGIES.items() if getattr(s, "modality", None) == modality)
            instead = f"strategy={' or '.join(others)}" if others else "another strategy"
            raise ConfigError(f"strategy={self.name} reads {self.modality}s, and this run's model takes {modality}s: "
                              f"use {instead}, or a {self.modality} model and data")

    def fit_classical(self, train, val, num_classes: int):
        raise NotImplementedError


STRATEGIES: dict[str, type[Strategy]] = {}


def register(name: str) -> Callable[[type[Strategy]], type[Strategy]]:
    def add(cls: type[Strategy]) -> type[Strategy]:
        if name in STRATEGIES and STRATEGIES[name] is not cls:
            raise ValueError(f"strategy {name!r} is registered twice")
        cls.name = name
        STRATEGIES[name] = cls
        return cls

    return add


def build_strategy(values: dict) -> Strategy:
    values = dict(values)
    name = values.get("name")
    if name not in STRATEGIES:
        raise ConfigError(f"strategy.name={name!r} is unknown: use one of {', '.join(sorted(STRATEGIES))}")
    return STRATEGIES[name].from_values(values)
