"""Loaders of in-memory splits: whole batches by index, in an order fixed by (seed, epoch).

A batch is gathered with one index per tensor (no per-sample Python), and under DDP each rank takes
its own share of every step's batch. Given each example's length (tokens per text), training
batches hold examples of similar length and eval batches go longest first, so batches cut to their
longest text (data/text/tokens.py, DynamicPadding) carry little padding.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.batch import Batch
from transferlab.errors import ConfigError


class InMemoryBatches(Dataset):
    """Indexed by a list of indices (a whole batch), so a batch is two tensor gathers.

    `inputs` fill the Batch field `field`: uint8 "images", or cached "features" (data/caches/feature_cache.py).
    The DataLoader hands `__getitems__` each batch's indices at once (torch's batched fetch).
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor, field: str = "images"):
        self.inputs, self.labels, self.field = inputs, labels, field

    def __len__(self) -> int:
        return len(self.labels)

    def __getitems__(self, indices: list[int]) -> Batch:
        index = torch.as_tensor(indices, dtype=torch.long)
        return Batch(labels=self.labels[index], **{self.field: self.inputs[index]})

    def __getitem__(self, index: int) -> Batch:
        return self.__getitems__([index])


def as_is(batch: Batch) -> Batch:
    # The batch is whole already (__getitems__); a module-level function, so workers can pickle it.
    return batch


def length_bucketed(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, multiplier: int,
                    generator: torch.Generator) -> torch.Tensor:
    """`order` rearranged so that each run of `batch_size` indices is a batch of similar lengths.

    The shuffled order is cut into chunks of `multiplier` batches, each chunk sorted by length and
    cut into batches, and the full batches shuffled by `generator`: batches stay random draws
    across the split (a sort over the whole split would make every batch a band of one length and
    the epoch a curriculum), and the order stays a function of what made `order`. The one short
    batch, if any, stays last, so cutting the result every `batch_size` gives exactly these batches.
    """
    if not len(order):
        return order
    chunks = [chunk[torch.argsort(lengths[chunk], stable=True)] for chunk in order.split(batch_size * multiplier)]
    batches = torch.cat(chunks).split(batch_size)
    full = [b for b in batches if len(b) == batch_size]
    short = [b for b in batches if len(b) < batch_size]
    shuffled = [full[i] for i in torch.randperm(len(full), generator=generator).tolist()]
    return torch.cat(shuffled + short)


def longest_first(lengths: torch.Tensor) -> torch.Tensor:
    """Eval order by length, longest first: a batch out of memory shows at the first batch, not the last."""
    return torch.argsort(lengths, descending=True, stable=True)


class EpochOrder(Sampler[int]):
    """This rank's indices of one epoch, in an order that is a pure function of (seed, epoch).

    A resumed run (or a re-run of the same command) sees the very same order in every epoch, which
    a sampler drawing from the global RNG cannot promise once the run restarts mid-training.
    Under DDP each rank takes every world_size-th index of the epoch's order: the training split
    drops the tail so every rank takes the same number of steps (DDP needs it); eval splits are
    shared out unevenly instead, every example scored exactly once (DistributedSampler's padding
    would score a few twice, and the gathered metrics would count them twice).

    With `lengths`, the training order is length-bucketed into batches of `batch_size` (the global
    batch: each rank's share of a bucketed batch is its batch of that step) and the eval order goes
    longest first. With `draw_weights` (one per example), a training epoch is `size` draws with
    replacement in proportion to them (a class-balanced sampler), from the same (seed, epoch)
    generator, so resume still sees the same order.
    """

    def __init__(self, size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 lengths: torch.Tensor | None = None, batch_size: int = 1, bucket_size_multiplier: int = 50,
                 draw_weights: torch.Tensor | None = None):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if lengths is not None and len(lengths) != size:
            raise ValueError(f"{len(lengths)} lengths for {size} examples")
        if draw_weights is not None and len(draw_weights) != size:
            raise ValueError(f"{len(draw_weights)} draw weights for {size} examples")
        self.draw_weights = draw_weights
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.lengths, self.batch_size, self.bucket_size_multiplier = lengths, batch_size, bucket_size_multiplier
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _epoch_order(self) -> torch.Tensor:
        """The whole epoch's order, before it is shared out among the ranks."""
        if not self.shuffle:
            return torch.arange(self.size) if self.lengths is None else longest_first(self.lengths)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.draw_weights is None:
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.multinomial(self.draw_weights.double(), self.size, replacement=True, generator=g)
        order = order[: self.size - self.size % self.world_size]
        if self.lengths is not None:
            order = length_bucketed(order, self.lengths, self.batch_size, self.bucket_size_multiplier, g)
        return order

    def indices(self) -> torch.Tensor:
        order = self._epoch_order()
        return order[self.rank :: self.world_size] if self.world_size > 1 else order

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        if self.world_size == 1:
            return self.size
        if self.shuffle:
            return self.size // self.world_size
        return len(range(self.rank, self.size, self.world_size))


class EpochBatches(Sampler[list[int]]):
    """EpochOrder cut into batches: the DataLoader's batch sampler.

    Like torch's BatchSampler it keeps its order as `.sampler`, where Lightning calls set_epoch()
    before each epoch. A last training batch of one image breaks BatchNorm, so it is dropped (and
    only it).
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1,
                 lengths: torch.Tensor | None = None, bucket_size_multiplier: int = 50, draw_weights: torch.Tensor | None = None):
        self.sampler = EpochOrder(size, shuffle, seed=seed, rank=rank, world_size=world_size, lengths=lengths,
                                  batch_size=batch_size * world_size, bucket_size_multiplier=bucket_size_multiplier,
                                  draw_weights=draw_weights)
        self.batch_size, self.shuffle = batch_size, shuffle

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    @property
    def rank(self) -> int:
        return self.sampler.rank

    @property
    def world_size(self) -> int:
        return self.sampler.world_size

    def _count(self) -> int:
        """Indices this rank takes per epoch, after the dropped single-image batch."""
        n = len(self.sampler)
        return n - 1 if self.shuffle and n % self.batch_size == 1 and n > 1 else n

    def __iter__(self):
        order, n = self.sampler.indices(), self._count()
        for start in range(0, n, self.batch_size):
            yield order[start : min(start + self.batch_size, n)].tolist()

    def __len__(self) -> int:
        return math.ceil(self._count() / self.batch_size)


def rank_batch_size(batch_size: int, world_size: int, train: bool) -> int:
    """One rank's share of a global batch: data.batch_size is the batch of one optimizer step.

    With rank r taking every world_size-th index (EpochBatches), the ranks' shards of step k are
    exactly batch k of a 1-process run, so DDP changes neither the number of steps nor the
    gradient (the mean over the global batch), and the lr needs no rescaling. Training batches
    must split evenly for that; eval batch sizes only bound memory, so they round up.
    """
    if world_size == 1:
        return batch_size
    if train and batch_size % world_size:
        raise ConfigError(
            f"data.batch_size={batch_size} is the global batch and must split evenly over the {world_size} DDP "
            f"processes: use a multiple of {world_size}"
        )
    return max(1, math.ceil(batch_size / world_size))


def epoch_to_come(trainer: pl.Trainer | None) -> int:
    """The epoch the next training batches belong to.

    Lightning creates the training iterator while it sets up the data, before its set_epoch(); a
    DataLoader with workers draws its first batches' indices right then. After a resume the order
    must already be the restored epoch's, or that epoch replays epoch 0's batches. This is the
    number Lightning passes to set_epoch() (trainer.current_epoch is updated only later).
    """
    progress = getattr(getattr(trainer, "fit_loop", None), "epoch_progress", None)
    return int(progress.current.processed) if progress is not None else 0


def batch_loader(
    inputs: torch.Tensor, labels: torch.Tensor, *, trainer: pl.Trainer | None, batch_size: int, shuffle: bool, seed: int,
    num_workers: int = 0, pin_memory: bool = False, field: str = "images", lengths: torch.Tensor | None = None,
    bucket_size_multiplier: int = 50, draw_weights: torch.Tensor | None = None,
) -> DataLoader:
    """A DataLoader of whole in-memory batches in EpochBatches order, this rank's share under DDP.

    EpochBatches is the batch sampler: one gather per batch. It shards itself, so the DDP trainer
    configs set use_distributed_sampler=false; the loader's `sampler` stays torch's sequential one,
    which Lightning leaves alone (overfit_batches replaces any other with a per-sample one).
    `lengths` (one per example) turns on length bucketing, `draw_weights` drawing with replacement (EpochOrder).
    """
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    batches = EpochBatches(
        len(labels), rank_batch_size(batch_size, world, train=shuffle), shuffle=shuffle, seed=seed, rank=rank, world_size=world,
        lengths=lengths, bucket_size_multiplier=bucket_size_multiplier, draw_weights=draw_weights if shuffle else None,
    )
    batches.set_epoch(epoch_to_come(trainer))
    return DataLoader(
        InMemoryBatches(inputs, labels, field), batch_sampler=batches, collate_fn=as_is,
        num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory,
    )
