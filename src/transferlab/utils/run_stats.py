"""Wall time and training throughput of a run, measured where Lightning runs the batches."""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import Callback


class RunStats(Callback):
    def __init__(self) -> None:
        self.fit_start = self.fit_s = 0.0
        self.train_images = 0
        self.train_batch_s = 0.0
        self._batch_start = 0.0

    def on_fit_start(self, trainer, pl_module) -> None:
        self.fit_start = time.perf_counter()

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_s = time.perf_counter() - self.fit_start

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_batch_s += time.perf_counter() - self._batch_start
        # The run's throughput: under DDP every rank takes a batch of this size in the same step
        # (the training split is sharded evenly, data/datamodule.py EpochBatches).
        self.train_images += len(batch) * trainer.world_size

    @property
    def train_images_per_s(self) -> float | None:
        return self.train_images / self.train_batch_s if self.train_batch_s else None

    # Under a spawn-based strategy fit runs in other processes; see transferlab.utils.ddp.
    def rank_zero_state(self, trainer) -> dict:
        return {k: getattr(self, k) for k in ("fit_s", "train_images", "train_batch_s")}

    def load_rank_zero_state(self, trainer, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)
