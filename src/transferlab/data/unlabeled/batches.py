"""Training batches that carry an unlabelled batch beside each labelled one (FixMatch, DANN).

The labelled split sets the epoch: one step per labelled batch, in EpochBatches' order. Each step
also draws `ratio` x its labelled batch size from the unlabelled pool. The pool is read as an
endless stream of seeded permutations, one per pass over it: step s of the run takes the stream's
next stretch, so every unlabelled image is seen once before any is seen twice, however the
pool's size compares with the labelled split's. Where a step's stretch starts is a pure function
of (epoch, batch): a resumed run draws exactly the batches the uninterrupted one drew. Under DDP
each rank takes every world_size-th index of the step's stretch, as it does of the labelled batch.
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.batch import SemiBatch
from transferlab.data.loaders import EpochBatches, InMemoryBatches, as_is, epoch_to_come, rank_batch_size
from transferlab.errors import ConfigError

# Apart from the labelled order's seed stream, which must not move when an unlabelled pool is added.
_STREAM_SEED_OFFSET = 104_723


class UnlabeledStream:
    """Indices of the unlabelled pool for each training step: `per_step` of them (this rank's
    share: `per_step // world_size`), the step's stretch of seeded permutations of 0..size-1."""

    def __init__(self, size: int, per_step: int, seed: int, rank: int = 0, world_size: int = 1):
        if size < 1:
            raise ValueError("the unlabelled pool is empty")
        self.size, self.per_step, self.seed = size, per_step, seed
        self.rank, self.world_size = rank, world_size
        self._pass: tuple[int, torch.Tensor] | None = None

    def _permutation(self, n: int) -> torch.Tensor:
        if self._pass is None or self._pass[0] != n:
            g = torch.Generator().manual_seed((self.seed + _STREAM_SEED_OFFSET) * 1_000_003 + n)
            self._pass = (n, torch.randperm(self.size, generator=g))
        return self._pass[1]

    def at_step(self, step: int) -> torch.Tensor:
        start = step * self.per_step
        parts, need = [], self.per_step
        while need:
            n, offset = divmod(start, self.size)
            piece = self._permutation(n)[offset : offset + need]
            parts.append(piece)
            start, need = start + len(piece), need - len(piece)
        stretch = torch.cat(parts)
        return stretch[self.rank :: self.world_size] if self.world_size > 1 else stretch


class PairedBatches(Sampler):
    """The batch sampler: (labelled indices, unlabelled indices) per step; `set_epoch` like EpochBatches."""

    def __init__(self, labeled: EpochBatches, unlabeled: UnlabeledStream):
        self.labeled, self.unlabeled = labeled, unlabeled
        self.sampler = labeled.sampler  # where Lightning looks for set_epoch

    def set_epoch(self, epoch: int) -> None:
        self.labeled.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.labeled)

    def __iter__(self):
        first = self.labeled.sampler.epoch * len(self.labeled)
        for k, batch in enumerate(self.labeled):
            yield batch, self.unlabeled.at_step(first + k).tolist()


class PairedDataset(Dataset):
    """Two splits gathered a whole batch at a time (InMemoryBatches each), into a SemiBatch."""

    def __init__(self, labeled, unlabeled):
        self.labeled = InMemoryBatches(labeled.inputs, labeled.labels, labeled.field)
        self.unlabeled = InMemoryBatches(unlabeled.inputs, unlabeled.labels, unlabeled.field)

    def __len__(self) -> int:
        return len(self.labeled)

    def __getitems__(self, pair) -> SemiBatch:
        labeled, unlabeled = pair
        return SemiBatch(self.labeled.__getitems__(labeled), self.unlabeled.__getitems__(unlabeled))


def paired_loader(labeled, unlabeled, *, trainer, batch_size: int, ratio: int, seed: int, num_workers: int = 0,
                  pin_memory: bool = False, draw_weights=None) -> DataLoader:
    """The training DataLoader of a strategy that learns from unlabelled batches: `labeled` and
    `unlabeled` are splits (ImageArrays, TokenArrays or StreamedImages)."""
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    per_rank = rank_batch_size(batch_size, world, train=True)
    per_step = ratio * batch_size
    if per_step > len(unlabeled):
        raise ConfigError(f"strategy.unlabeled_ratio={ratio} x data.batch_size={batch_size} asks for {per_step} unlabelled "
                          f"images a step, and the pool holds {len(unlabeled)}: lower one of them, or raise data.unlabeled_max")
    batches = EpochBatches(len(labeled), per_rank, shuffle=True, seed=seed, rank=rank, world_size=world, draw_weights=draw_weights)
    batches.set_epoch(epoch_to_come(trainer))
    sampler = PairedBatches(batches, UnlabeledStream(len(unlabeled), per_step, seed, rank, world))
    return DataLoader(PairedDataset(labeled, unlabeled), batch_sampler=sampler, collate_fn=as_is,
                      num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory)
