"""The plan: a strategy applied to one backbone's block groups and one head.

It holds which parameters train in which epoch (`units`, one optimizer group each, all built up
front) and is the one place trainable state is set (`apply`: requires_grad and norm-layer modes).
FinetuneCallback moves it from epoch to epoch; the module re-applies it when Lightning switches
train/eval mode. Every learning rate is a pure function of (step, config) (finetune/schedules.py),
so LR schedulers, checkpoint resume and the LR finder need no special state (adding parameter
groups mid-training breaks torch's schedulers: docs/architecture.md lists such pitfalls).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from transferlab.errors import ConfigError
from transferlab.finetune.strategies.base import Strategy
from transferlab.models.groups import BlockGroup


@dataclass
class ParamUnit:
    """Parameters that share a trainability schedule and a learning rate: one optimizer group."""

    name: str
    params: list[nn.Parameter]
    lr_scale: float  # relative to the head lr
    unfreeze_epoch: int  # first epoch in which these parameters train
    group_index: int | None = None  # the block group; None for the head (and a strategy's own module, trained like it)

    @property
    def is_head(self) -> bool:
        return self.group_index is None


@dataclass
class FinetunePlan:
    strategy: Strategy
    groups: list[BlockGroup]
    head: nn.Module
    # The backbone's lrs relative to the strategy's (model.backbone_lr_scale): pre-trained
    # transformers fine-tune at about a hundredth of the lr a new head or a CNN takes.
    backbone_lr_scale: float = 1.0
    unfreeze_epochs: list[int | None] = field(init=False)  # per group, None = never trains
    epoch: int = field(default=0, init=False)  # the epoch whose state apply() sets
    # Set under DDP (world size > 1) before the model is wrapped; see apply() and gated_params().
    gate_frozen_grads: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        epochs = list(self.strategy.unfreeze_epochs(self.num_groups))
        if len(epochs) != self.num_groups:
            raise ValueError(f"strategy {self.strategy.name} scheduled {len(epochs)} groups, the backbone has {self.num_groups}")
        self.unfreeze_epochs = epochs
        self._units = self._build_units()

    @property
    def config(self):
        return self.strategy.config

    @property
    def num_groups(self) -> int:
        return len(self.groups)

    def lr_scale(self, group_index: int) -> float:
        return self.strategy.lr_scale(group_index, self.num_groups) * self.backbone_lr_scale

    def trains(self, group_index: int, epoch: int) -> bool:
        start = self.unfreeze_epochs[group_index]
        return start is not None and epoch >= start

    def trainable_groups(self, epoch: int) -> list[int]:
        return [i for i in range(self.num_groups) if self.trains(i, epoch)]

    # --- units -------------------------------------------------------------------------------
    def _build_units(self) -> list[ParamUnit]:
        units = []
        for g in self.groups:
            start = self.unfreeze_epochs[g.index]
            norm_params = {id(p) for m in g.norm_modules for p in m.parameters(recurse=False)}
            trainable = [p for n, p in zip(g.param_names, g.params) if self.strategy.trainable(n, p, id(p) in norm_params)]
            if self.config.frozen_norm == "affine_only" and (start is None or start > 0) and norm_params:
                # Norm affine parameters of frozen groups train from the start (running stats stay fixed).
                affine = [p for p in g.params if id(p) in norm_params]
                units.append(ParamUnit(f"backbone.{g.name}.norm", affine, self.lr_scale(g.index), 0, g.index))
                rest = [p for p in trainable if id(p) not in norm_params]
            else:
                rest = trainable
            if start is not None and rest:
                units.append(ParamUnit(f"backbone.{g.name}", rest, self.lr_scale(g.index), start, g.index))
        units.append(ParamUnit("head", list(self.head.parameters()), 1.0, 0))
        extra = self.strategy_parameters()
        if extra:  # a module of the strategy's own (DANN's domain classifier): trains like the head
            units.append(ParamUnit("strategy", [p for _, p in extra], 1.0, 0))
        return units

    def strategy_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of the strategy's own module, named as the module registers it."""
        state = self.strategy.state_module()
        return [(f"strategy_state.{n}", p) for n, p in state.named_parameters()] if state is not None else []

    def units(self) -> list[ParamUnit]:
        """Every unit that trains at some point: backbone units bottom to top, then the head."""
        return self._units

    def backbone_units(self) -> list[ParamUnit]:
        return [u for u in self._units if not u.is_head]

    def check_reachable(self, max_epochs: int | None) -> None:
        """Refuse a schedule that makes the run another strategy: groups that would start training
        after the last epoch, or (for strategies meant to train the backbone) none at all."""
        if max_epochs is None:
            return
        # In the order they would unfreeze: earliest epoch first, top group first.
        late = sorted(
            ((e, -i, self.groups[i].name) for i, e in enumerate(self.unfreeze_epochs) if e is not None and e >= max_epochs)
        )
        late = [(name, e) for e, _, name in late]
        name = self.strategy.name
        if late:
            shown = ", ".join(f"{g} at epoch {e}" for g, e in late[:4]) + (" ..." if len(late) > 4 else "")
            raise ConfigError(
                f"strategy={name} would start training block groups after the last epoch ({shown}; trainer.max_epochs="
                f"{max_epochs} runs epochs 0..{max_epochs - 1}), so they would never train: {self.strategy.schedule_fix(max_epochs)}"
            )
        if self.strategy.trains_backbone and not self.backbone_units():
            raise ConfigError(f"strategy={name} as configured trains no block group of the backbone: {self.strategy.schedule_fix(max_epochs)}")

    # --- trainable state ---------------------------------------------------------------------
    def requires_grad_at(self, epoch: int) -> dict[int, bool]:
        """id(param) -> whether it trains in this epoch."""
        flags = {id(p): False for g in self.groups for p in g.params}
        for unit in self.backbone_units():
            if epoch >= unit.unfreeze_epoch:
                for p in unit.params:
                    flags[id(p)] = True
        return flags

    def apply(self, backbone: nn.Module, training: bool, epoch: int | None = None) -> None:
        """Set requires_grad and norm-layer modes for `epoch` (given: it becomes `self.epoch`).

        Frozen groups compute no gradients, so the optimizer skips them: no weight decay and no
        momentum drift. Norm layers of frozen groups stay in eval mode under `eval`/`affine_only`
        (Lightning puts every module in train mode at each epoch, so this runs again then).
        """
        if epoch is not None:
            self.epoch = epoch
        flags = self.requires_grad_at(self.epoch)
        if self.gate_frozen_grads:
            # DDP all-reduces only the parameters that required grad when it wrapped the model, so a
            # group unfrozen later would train on each rank's own gradients and the ranks would
            # drift apart. Every group that ever trains therefore requires grad from the start, and
            # FinetuneCallback drops the gradients of those not yet unfrozen before each optimizer
            # step (gated_params): AdamW and SGD skip a None grad, so they stay bit-identical.
            for unit in self.backbone_units():
                for p in unit.params:
                    flags[id(p)] = True
        for p in backbone.parameters():
            p.requires_grad_(flags.get(id(p), False))
        freeze_norm_stats = self.config.frozen_norm in ("eval", "affine_only")
        norm_layers_train = self.strategy.norm_layers_train()
        for g in self.groups:
            frozen = not (self.trains(g.index, self.epoch) and norm_layers_train)
            for m in g.norm_modules:
                m.train(training and not (frozen and freeze_norm_stats))

    def gated_params(self) -> list[nn.Parameter]:
        """Parameters that require grad only because of gate_frozen_grads and must not step in this epoch."""
        if not self.gate_frozen_grads:
            return []
        return [p for unit in self.backbone_units() if self.epoch < unit.unfreeze_epoch for p in unit.params]

    def describe(self) -> str:
        parts = []
        for g in self.groups:
            start = self.unfreeze_epochs[g.index]
            when = "frozen" if start is None else ("trains" if start == 0 else f"from epoch {start}")
            parts.append(f"{g.name}({g.numel() / 1e6:.2f}M, lr x{self.lr_scale(g.index):.3g}, {when})")
        return f"{self.strategy.name}: " + ", ".join(parts)
