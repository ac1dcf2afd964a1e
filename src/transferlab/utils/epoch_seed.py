"""Reseed the global RNGs at every epoch start from (seed, epoch, rank).

Dropout, stochastic depth and the train-time augmentation draw from the global torch RNG, and
Lightning's checkpoints do not carry RNG state. Seeding each epoch from its number makes an epoch
the same whether the run got there without a break or resumed from last.ckpt: the killed-and-
resumed run ends with the uninterrupted run's metrics (tests/test_resume.py).
"""

from __future__ import annotations

import random

import lightning.pytorch as pl
import numpy as np
import torch


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    # Distinct, well-spread seeds per (seed, epoch, rank); fits the 32 bits numpy accepts.
    return (seed * 1_000_003 + epoch * 7_919 + rank * 104_729) % (2**32)


class EpochSeed(pl.Callback):
    def __init__(self, seed: int):
        self.seed = int(seed)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        s = epoch_seed(self.seed, trainer.current_epoch, trainer.global_rank)
        torch.manual_seed(s)
        random.seed(s)
        np.random.seed(s)
