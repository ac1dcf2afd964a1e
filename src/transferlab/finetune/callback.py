"""The fine-tuning callback: moves the plan to each epoch, gates gradients under DDP, and counts
what actually trained.

Unlike Lightning's BackboneFinetuning it adds no optimizer groups mid-training (they all exist
from the start, at lr 0 until their epoch), and the trainable state follows from the epoch number
alone, so a resumed run is in the same state as one that never stopped.

Under DDP (world size > 1) groups that are not yet unfrozen still require grad (the plan's
`gate_frozen_grads`, see FinetunePlan.apply) and this callback drops their gradients before every
optimizer step, so ranks stay identical across an unfreeze.

The count of optimizer steps per unit (a step counts for a unit when its lr is above 0 and its
parameters have gradients) goes into metrics.json's `trained`: a run is recorded as completed only
if every unit its strategy planned to train took a step (train.py).
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class FinetuneCallback(Callback):
    def __init__(self) -> None:
        self._last_groups: list[int] | None = None
        self._gated: list = []  # parameters whose gradients are dropped in this epoch (DDP only)
        self.max_trainable_params = 0
        self.optimizer_steps = 0
        self.unit_steps: dict[str, int] = {}

    def _training_params(self, module) -> int:
        # What trains in this epoch: under DDP, gated groups require grad without training.
        gated = {id(p) for p in self._gated}
        return sum(p.numel() for p in module.parameters() if p.requires_grad and id(p) not in gated)

    def _apply(self, trainer: pl.Trainer, module) -> None:
        plan = module.plan
        plan.epoch = trainer.current_epoch
        plan.apply(module.backbone, training=module.training)
        self._gated = plan.gated_params()
        self.max_trainable_params = max(self.max_trainable_params, self._training_params(module))
        groups = plan.trainable_groups(plan.epoch)
        if groups != self._last_groups:
            log.info(
                "epoch %d: %d/%d block groups train %s, %s trainable parameters",
                plan.epoch, len(groups), plan.num_groups, groups, f"{self._training_params(module):,}",
            )
            self._last_groups = groups

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Runs in every rank before the strategy wraps the model in DDP, which registers only the
        # parameters that require grad at that moment (see FinetunePlan.apply).
        if stage == "fit" and trainer.world_size > 1 and not pl_module.plan.gate_frozen_grads:
            pl_module.plan.gate_frozen_grads = True
            pl_module.plan.apply(pl_module.backbone, training=pl_module.training)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)
        plan = pl_module.plan
        # Identical on every rank: the all-reduce only keeps Lightning from warning about it.
        sync = trainer.world_size > 1
        pl_module.log("finetune/trainable_params", float(self._training_params(pl_module)), on_epoch=True, on_step=False, sync_dist=sync)
        pl_module.log("finetune/groups_trained", float(len(plan.trainable_groups(plan.epoch))), on_epoch=True, on_step=False, sync_dist=sync)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # After DDP's all-reduce, so every rank drops the same (averaged) gradients.
        for p in self._gated:
            p.grad = None
        self.optimizer_steps += 1
        stepped = {
            g.get("name", str(i)).removesuffix(".no_decay")
            for i, g in enumerate(optimizer.param_groups)
            if g["lr"] > 0 and any(p.grad is not None for p in g["params"])
        }
        for unit in stepped:
            self.unit_steps[unit] = self.unit_steps.get(unit, 0) + 1

    # Saved in checkpoints (a resumed run counts the steps before the interruption too) and sent
    # back from the ranks by the spawned DDP strategy (transferlab.utils.ddp).
    def state_dict(self) -> dict:
        return {"max_trainable_params": self.max_trainable_params, "optimizer_steps": self.optimizer_steps, "unit_steps": dict(self.unit_steps)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.max_trainable_params = int(state_dict.get("max_trainable_params", 0))
        self.optimizer_steps = int(state_dict.get("optimizer_steps", 0))
        self.unit_steps = dict(state_dict.get("unit_steps", {}))
