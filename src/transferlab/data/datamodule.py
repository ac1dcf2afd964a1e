"""The DataModule: a source's splits, carved and subsampled, served as uint8 batches.

Sources (data/sources.py) hold every split in memory as one uint8 tensor; batches are gathered by
index (no per-sample Python) and turned into the backbone's input on the device, once per batch,
by BatchPreprocess (data/transforms.py).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from transferlab.data.arrays import ImageArrays
from transferlab.data.sources import SourceContext, load_source
from transferlab.data.subsample import stratified_split
from transferlab.data.transforms import AugmentConfig, BatchPreprocess
from transferlab.errors import ConfigError, DataError
from transferlab.models.backbone import Preprocess
from transferlab.utils.seeding import seed_training_batch

log = logging.getLogger(__name__)


class InMemoryBatches(Dataset):
    """Indexed by a list of indices (a whole batch), so a batch is two tensor gathers.

    `inputs`: uint8 images here, cached backbone features in data/feature_cache.py.
    """

    def __init__(self, inputs: torch.Tensor, labels: torch.Tensor):
        self.inputs, self.labels = inputs, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):
        index = torch.as_tensor(index, dtype=torch.long)
        return self.inputs[index], self.labels[index]


class EpochBatches(Sampler[list[int]]):
    """Index batches whose order is a pure function of (seed, epoch), sharded over DDP ranks.

    A resumed run (or a re-run of the same command) sees the very same batches in every epoch, which
    a sampler drawing from the global RNG cannot promise once the run restarts mid-training.
    Lightning calls set_epoch() before each epoch. Under DDP each rank takes every world_size-th
    index of the epoch's order: the training split drops the tail so every rank takes the same
    number of steps (DDP needs it); eval splits pad with the first indices instead (like
    DistributedSampler), so every image is scored.
    """

    def __init__(self, size: int, batch_size: int, shuffle: bool, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _indices(self) -> torch.Tensor:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=g)
        else:
            order = torch.arange(self.size)
        if self.world_size > 1:
            if self.shuffle:
                order = order[: self.size - self.size % self.world_size]
            elif self.size % self.world_size:
                order = torch.cat([order, order[: self.world_size - self.size % self.world_size]])
            order = order[self.rank :: self.world_size]
        return order

    def _count(self) -> int:
        """Indices this rank takes per epoch (the length of _indices(), without drawing them)."""
        if self.world_size == 1:
            n = self.size
        else:
            n = self.size // self.world_size if self.shuffle else math.ceil(self.size / self.world_size)
        # A last training batch of one image breaks BatchNorm; drop it (and only it).
        return n - 1 if self.shuffle and n % self.batch_size == 1 and n > 1 else n

    def __iter__(self):
        order, n = self._indices(), self._count()
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


def batch_loader(
    inputs: torch.Tensor, labels: torch.Tensor, *, trainer: pl.Trainer | None, batch_size: int, shuffle: bool, seed: int,
    num_workers: int = 0, pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader of whole in-memory batches in EpochBatches order, this rank's share under DDP.

    The sampler yields whole batches (batch_size=None): one gather per batch. It shards itself, so
    the DDP trainer configs set use_distributed_sampler=false.
    """
    rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
    batches = EpochBatches(
        len(labels), rank_batch_size(batch_size, world, train=shuffle), shuffle=shuffle, seed=seed, rank=rank, world_size=world,
    )
    return DataLoader(
        InMemoryBatches(inputs, labels), sampler=batches, batch_size=None,
        num_workers=num_workers, persistent_workers=num_workers > 0, pin_memory=pin_memory,
    )


class TransferDataModule(pl.LightningDataModule):
    def __init__(
        self,
        source: str,
        preprocess: Preprocess,
        source_args: dict[str, Any] | None = None,
        samples_per_class: int | None = None,
        train_fraction: float | None = None,
        val_per_class: int | None = None,
        val_fraction: float | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        augment: AugmentConfig | None = None,
    ):
        super().__init__()
        self.source = source
        self.source_args = dict(source_args or {})
        self.preprocess_cfg = preprocess
        self.samples_per_class = samples_per_class
        self.train_fraction = train_fraction
        self.val_per_class = val_per_class
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.preprocess = BatchPreprocess(**preprocess.as_dict(), augment=augment)
        self.splits: dict[str, ImageArrays] = {}
        self.classes: list[str] = []

    # --- data ----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        # Images are stored a little larger than the crop so the eval centre crop sees what timm's does.
        storage = math.floor(self.preprocess_cfg.image_size / self.preprocess_cfg.crop_pct)
        splits = load_source(self.source, self.source_args, SourceContext(seed=self.seed, storage_size=storage))
        pool = splits.train
        if splits.val is not None and self.val_per_class is None and self.val_fraction is None:
            train_idx, _ = stratified_split(
                pool.labels, seed=self.seed, samples_per_class=self.samples_per_class, train_fraction=self.train_fraction, classes=pool.classes,
            )
            val = splits.val
        else:
            train_idx, val_idx = stratified_split(
                pool.labels,
                seed=self.seed,
                val_per_class=self.val_per_class,
                val_fraction=self.val_fraction,
                samples_per_class=self.samples_per_class,
                train_fraction=self.train_fraction,
                classes=pool.classes,
            )
            val = pool.subset(val_idx)
        self.splits = {"train": pool.subset(train_idx), "val": val, "test": splits.test}
        self.classes = list(pool.classes)
        for name, arrays in self.splits.items():
            if len(arrays) == 0:
                raise DataError(f"the {name} split of data.source={self.source} is empty: check data.samples_per_class / val settings and the data itself")
        log.info(
            "data %s: train %d, val %d, test %d images, %d classes, stored %s",
            self.source, len(self.splits["train"]), len(self.splits["val"]), len(self.splits["test"]),
            self.num_classes, tuple(pool.images.shape[1:]),
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    # --- loaders -------------------------------------------------------------------------------
    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        arrays = self.splits[split]
        return batch_loader(
            arrays.images, arrays.labels, trainer=self.trainer, shuffle=shuffle, seed=self.seed,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            num_workers=self.num_workers, pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        images, labels = batch
        self.preprocess.to(images.device)
        training = self.trainer is not None and self.trainer.training
        seed_training_batch(self.trainer, self.seed)
        return self.preprocess(images, train=training), labels
