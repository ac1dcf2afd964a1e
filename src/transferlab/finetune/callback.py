"""The unfreeze callback: applies the plan's trainability at every epoch start.

Unlike Lightning's BackboneFinetuning it adds no optimizer groups mid-training (they all exist
from the start, at lr 0 until their epoch), and it derives the state from the epoch number alone,
so a resumed run is in the same state as one that never stopped.

Under DDP (world size > 1) groups that are not yet unfrozen still require grad (the plan's
`gate_frozen_grads`, see FinetunePlan.apply) and this callback drops their gradients before every
optimizer step, so ranks stay identical across an unfreeze.
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
        self._max_training = 0

    def _training_params(self, module) -> int:
        # What trains in this epoch: under DDP, gated groups require grad without training.
        gated = {id(p) for p in self._gated}
        return sum(p.numel() for p in module.parameters() if p.requires_grad and id(p) not in gated)

    def _apply(self, trainer: pl.Trainer, module) -> None:
        epoch = trainer.current_epoch
        module.set_finetune_epoch(epoch)
        self._gated = module.plan.gated_params(epoch)
        if module.plan.gate_frozen_grads:
            # set_finetune_epoch counts parameters that require grad, which under DDP includes the
            # gated ones; metrics.json's "trainable" must mean the same as in a 1-process run.
            self._max_training = max(self._max_training, self._training_params(module))
            module.max_trainable_params = self._max_training
        groups = module.plan.trainable_groups(epoch)
        if groups != self._last_groups:
            log.info(
                "epoch %d: %d/%d block groups train %s, %s trainable parameters",
                epoch, len(groups), module.plan.num_groups, groups, f"{self._training_params(module):,}",
            )
            self._last_groups = groups

    def setup(self, trainer, pl_module, stage: str) -> None:
        # Runs in every rank before the strategy wraps the model in DDP, which registers only the
        # parameters that require grad at that moment (see FinetunePlan.apply).
        if stage == "fit" and trainer.world_size > 1 and not pl_module.plan.gate_frozen_grads:
            self._max_training = pl_module.max_trainable_params
            pl_module.plan.gate_frozen_grads = True
            pl_module.set_finetune_epoch(pl_module.finetune_epoch)

    def on_fit_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)
        # Identical on every rank: the all-reduce only keeps Lightning from warning about it.
        sync = trainer.world_size > 1
        pl_module.log("finetune/trainable_params", float(self._training_params(pl_module)), on_epoch=True, on_step=False, sync_dist=sync)
        pl_module.log("finetune/groups_trained", float(len(pl_module.plan.trainable_groups(trainer.current_epoch))), on_epoch=True, on_step=False, sync_dist=sync)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        # After DDP's all-reduce, so every rank drops the same (averaged) gradients.
        for p in self._gated:
            p.grad = None

    def state_dict(self) -> dict:
        return {"trainable_groups": self._last_groups}

    # Under a spawn-based strategy fit runs in other processes; see transferlab.utils.ddp.
    def rank_zero_state(self, trainer) -> dict:
        return {"max_trainable_params": trainer.lightning_module.max_trainable_params}

    def load_rank_zero_state(self, trainer, state: dict) -> None:
        trainer.lightning_module.max_trainable_params = state["max_trainable_params"]
