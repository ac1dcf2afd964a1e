"""Each training batch's randomness from (seed, epoch, batch, rank) alone.

Augmentation, dropout and stochastic depth draw from the global torch RNG, and Lightning's
checkpoints do not carry RNG state; worse, how many draws happen between two batches depends on
where the process started (a DataLoader iterator takes one draw when it is created, and a resumed
fit creates it at another point than a fit that never stopped). Reseeding right before each
training batch is augmented makes every batch independent of that history, so a run killed and
resumed from last.ckpt ends with the uninterrupted run's metrics (tests/test_resume.py).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch


def batch_seed(seed: int, epoch: int, batch: int, rank: int = 0) -> int:
    # Distinct, well-spread seeds per (seed, epoch, batch, rank), within 63 bits.
    return (seed * 1_000_003 + epoch * 7_919 * 65_537 + batch * 104_729 + rank * 15_485_863) % (2**63 - 1)


def seed_training_batch(trainer: pl.Trainer | None, seed: int) -> None:
    """Call where a training batch's randomness starts (on_after_batch_transfer, before augmenting)."""
    if trainer is None or not trainer.training:
        return
    # The epoch loop bumps its batch counter only after the transfer hooks, hence + 1.
    batch = trainer.fit_loop.epoch_loop.batch_idx + 1
    torch.manual_seed(batch_seed(seed, trainer.current_epoch, batch, trainer.global_rank))
