"""The unfreeze callback: applies the plan's trainability at every epoch start.

Unlike Lightning's BackboneFinetuning it adds no optimizer groups mid-training (they all exist
from the start, at lr 0 until their epoch), and it derives the state from the epoch number alone,
so a resumed run is in the same state as one that never stopped.
"""

from __future__ import annotations

import logging

import lightning.pytorch as pl
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


class FinetuneCallback(Callback):
    def __init__(self) -> None:
        self._last_groups: list[int] | None = None

    def _apply(self, trainer: pl.Trainer, module) -> None:
        epoch = trainer.current_epoch
        module.set_finetune_epoch(epoch)
        groups = module.plan.trainable_groups(epoch)
        if groups != self._last_groups:
            log.info(
                "epoch %d: %d/%d block groups train %s, %s trainable parameters",
                epoch, len(groups), module.plan.num_groups, groups, f"{module.trainable_params():,}",
            )
            self._last_groups = groups

    def on_fit_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._apply(trainer, pl_module)
        pl_module.log("finetune/trainable_params", float(pl_module.trainable_params()), on_epoch=True, on_step=False)
        pl_module.log("finetune/groups_trained", float(len(pl_module.plan.trainable_groups(trainer.current_epoch))), on_epoch=True, on_step=False)

    def state_dict(self) -> dict:
        return {"trainable_groups": self._last_groups}
