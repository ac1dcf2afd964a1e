"""The DataModule: a source's splits, carved and subsampled, served as Batches.

Sources (data/sources/) hold every split in memory, or, for image folders with data.storage=stream,
as rows of LitData chunks (data/images/stream_store.py); either way batches are gathered by index in the
same order (data/loaders.py) and turned into the backbone's input on the device, once per batch, by
the transform the backbone supplies (for images: BatchPreprocess, data/images/transforms.py).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from transferlab.data.arrays import ImageArrays
from transferlab.data.batch import Batch, BatchTransform, SemiBatch
from transferlab.data.class_balance import SAMPLERS, balanced_sample_weights, class_counts, skew_fractions, warn_balanced_subset
from transferlab.data.loaders import batch_loader
from transferlab.data.sealed import SealedSplit
from transferlab.data.sources import SourceContext, load_source
from transferlab.data.images.storage import Storage, human_bytes
from transferlab.data.images.stream_store import StreamedImages
from transferlab.data.subsample import skewed_pool, stratified_split
from transferlab.data.unlabeled.pool import (CHOICES, capped, check_choice, check_pool, check_same_classes, check_target, hide_labels, rest_indices,
                                             target_pool)
from transferlab.data.unlabeled.files import load_unlabeled_images, load_unlabeled_texts
from transferlab.data.unlabeled.batches import paired_loader
from transferlab.errors import DataError
from transferlab.utils.seeding import seed_training_batch

log = logging.getLogger(__name__)


class TransferDataModule(pl.LightningDataModule):
    def __init__(
        self,
        source: str,
        transform: BatchTransform,
        source_args: dict[str, Any] | None = None,
        storage_size: int = 224,
        storage: Storage = Storage(),
        stream_workers: int = 0,
        samples_per_class: int | None = None,
        train_fraction: float | None = None,
        val_per_class: int | None = None,
        val_fraction: float | None = None,
        batch_size: int = 64,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        seed: int = 0,
        tokenize=None,
        bucket_by_length: bool = False,
        bucket_size_multiplier: int = 50,
        unlabeled: str | None = None,
        unlabeled_max: int | None = None,
        unlabeled_ratio: int = 0,
        strong_augment=None,
        target: dict | None = None,
        unlabeled_column: str = "text",
        use_unlabeled: bool = True,
        sampler: str = "natural",
        skew: dict | None = None,
        seal_test: bool = False,
    ):
        super().__init__()
        check_choice(unlabeled, unlabeled_max)
        if sampler not in SAMPLERS:
            raise DataError(f"data.sampler={sampler!r} is unknown: use one of {', '.join(SAMPLERS)}")
        check_target(target, unlabeled)
        self.source = source
        self.source_args = dict(source_args or {})
        self.transform = transform
        self.storage_size = storage_size
        self.storage = storage
        # Streamed splits are read from disk by the DataLoader's workers; in-memory ones need none.
        self.stream_workers = stream_workers
        self.samples_per_class = samples_per_class
        self.train_fraction = train_fraction
        self.val_per_class = val_per_class
        self.val_fraction = val_fraction
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.tokenize = tokenize  # a text backbone's tokenizer, for text sources
        # Texts only: training batches of similar lengths, eval batches longest first (data/loaders.py).
        self.bucket_by_length = bucket_by_length
        self.bucket_size_multiplier = bucket_size_multiplier
        # The unlabelled pool (data/unlabeled/pool.py): splits["unlabeled"] when set, never served by a loader.
        # Another source as the target domain: its test split is the run's, its images the unlabelled pool.
        self.target = dict(target) if target else None
        self.unlabeled = "target" if self.target and unlabeled is None else unlabeled
        if not use_unlabeled and self.unlabeled != "target":
            self.unlabeled = None  # a strategy that learns from labels alone; a target domain still lends its test split
        self.unlabeled_max = unlabeled_max
        self.unlabeled_column = unlabeled_column  # the column of texts when data.unlabeled is a table
        # A strategy that trains on unlabelled batches (fixmatch, dann): each training step
        # then draws unlabeled_ratio x batch_size of them (data/unlabeled/batches.py), and, with
        # `strong_augment`, a strongly augmented second view of them.
        self.unlabeled_ratio = unlabeled_ratio
        self.strong_augment = strong_augment
        # balanced: the training loader draws every class alike (with replacement), natural: each example once an epoch.
        self.sampler = sampler
        # {class: fraction}: the training pool cut before any carving, to make a skewed data set on purpose.
        self.skew = dict(skew or {})
        # A tuning trial (tune.arm=search): the test split is replaced by one that cannot be read.
        self.seal_test = seal_test
        self.splits: dict[str, ImageArrays] = {}
        self.classes: list[str] = []
        self.pool_counts: torch.Tensor | None = None  # per class, the training pool the subset is drawn from
        self.prior_warning = False  # whether the log said that a balanced subset hides the pool's skew

    # --- data ----------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        context = SourceContext(seed=self.seed, storage_size=self.storage_size, tokenize=self.tokenize, storage=self.storage)
        splits = load_source(self.source, self.source_args, context)
        if self.target:
            splits = self._with_target(splits, context)
        if self.skew:
            splits = self._skewed(splits)
        pool = splits.train
        self.pool_counts = class_counts(pool.labels, len(pool.classes))
        self.prior_warning = warn_balanced_subset(self.pool_counts, self.samples_per_class, list(pool.classes))
        if self.tokenize is not None and pool.field != "input_ids":
            raise DataError(f"data.source={self.source} holds images, and this model is a text encoder: use an image "
                            "model (model=efficientnet_lite0, or model=timm model.name=<timm name>)")
        unit = "images" if pool.field == "images" else "texts"
        if splits.val is not None and self.val_per_class is None and self.val_fraction is None:
            train_idx, _ = stratified_split(
                pool.labels, seed=self.seed, samples_per_class=self.samples_per_class, train_fraction=self.train_fraction, classes=pool.classes,
                unit=unit,
            )
            val_idx = None
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
                unit=unit,
            )
            val = pool.subset(val_idx)
        unlabeled = self._unlabeled_pool(splits, train_idx, val_idx)
        # Last, since take() may reuse the pool's memory for the training split.
        self.splits = {"train": pool.take(train_idx), "val": val, "test": splits.test}
        if unlabeled is not None:
            self.splits["unlabeled"] = unlabeled
        self.classes = list(pool.classes)
        for name, arrays in self.splits.items():
            if len(arrays) == 0:
                raise DataError(f"the {name} split of data.source={self.source} is empty: check data.samples_per_class / val settings and the data itself")
        if len(self.classes) < 2:
            raise DataError(
                f"data.source={self.source} has {len(self.classes)} class ({', '.join(self.classes) or 'none'}): "
                f"a classifier needs at least 2 classes; add {unit} of another class"
            )
        log.info(
            "data %s: train %d, val %d, test %d %s, %d classes, stored %s",
            self.source, len(self.splits["train"]), len(self.splits["val"]), len(self.splits["test"]),
            unit, self.num_classes, tuple(pool.inputs.shape[1:]),
        )
        if unlabeled is not None:
            log.info("data %s: unlabeled (data.unlabeled=%s) %d %s, labels hidden", self.source, self.unlabeled, len(unlabeled), unit)
        if self.seal_test:
            self.splits["test"] = SealedSplit(len(self.splits["test"]), "tune.arm=search")
            log.info("data %s: the test split is sealed for this tuning trial", self.source)
        log.info("data %s %s", self.source, self.held_bytes_text())

    def _with_target(self, splits, context):
        """The source's labelled pool with the target's test split and unlabelled images."""
        name = str(self.target["source"])
        target = load_source(name, dict(self.target.get("source_args") or {}), context, key="data.target")
        check_same_classes(splits.train.classes, target.train.classes, self.source, name)
        log.info("data.target=%s: tested on its test split (%d), its training images the unlabelled pool", name, len(target.test))
        return dataclasses.replace(splits, test=target.test, unlabeled=target_pool(target))

    def _skewed(self, splits):
        """The splits with data.skew's classes of the training pool cut, before val and the subset are carved from it."""
        pool = splits.train
        fractions = skew_fractions(self.skew, list(pool.classes))
        before = class_counts(pool.labels, len(pool.classes))
        pool = pool.take(skewed_pool(pool.labels, fractions, self.seed))
        after = class_counts(pool.labels, len(pool.classes))
        log.info("data.skew: training pool cut to %s", ", ".join(f"{pool.classes[c]} {int(before[c])} -> {int(after[c])}" for c in fractions))
        return dataclasses.replace(splits, train=pool)

    def train_counts(self) -> torch.Tensor:
        return class_counts(self.splits["train"].labels, self.num_classes)

    def train_draw_weights(self) -> torch.Tensor | None:
        """Per training example, its weight in a class-balanced draw (data.sampler=balanced); None: the natural order."""
        return balanced_sample_weights(self.splits["train"].labels) if self.sampler == "balanced" else None

    def _unlabeled_pool(self, splits, train_idx: torch.Tensor, val_idx: torch.Tensor | None):
        """data.unlabeled's pool, labels hidden; carved before the pool's memory goes to the training split."""
        if self.unlabeled is None:
            return None
        if self.unlabeled not in CHOICES:  # a path (check_choice made sure it exists)
            unlabeled = self._unlabeled_files(splits.train)
            unlabeled = unlabeled.subset(capped(torch.arange(len(unlabeled)), self.unlabeled_max, self.seed))
        elif self.unlabeled == "rest":
            pool = splits.train
            idx = rest_indices(len(pool), train_idx, *([] if val_idx is None else [val_idx]))
            unlabeled = pool.subset(capped(idx, self.unlabeled_max, self.seed))
        else:  # source, or target: _with_target put the target's images there
            unlabeled = splits.unlabeled
            if unlabeled is not None:
                idx = capped(torch.arange(len(unlabeled)), self.unlabeled_max, self.seed)
                unlabeled = unlabeled if len(idx) == len(unlabeled) else unlabeled.subset(idx)
        check_pool(unlabeled, self.unlabeled, self.source)
        return hide_labels(unlabeled)

    def _unlabeled_files(self, like):
        path = Path(str(self.unlabeled)).expanduser()
        if like.field == "images":
            return load_unlabeled_images(path, like)
        return load_unlabeled_texts(path, like, self.tokenize, self.unlabeled_column)

    def held_bytes(self) -> dict[str, int]:
        """Bytes each split holds in memory (a streamed split: its labels and row numbers)."""
        return {k: v.nbytes for k, v in self.splits.items()}

    def held_bytes_text(self) -> str:
        held = ", ".join(f"{k} {human_bytes(n)}" for k, n in self.held_bytes().items())
        streamed = {k: v.streamed_bytes for k, v in self.splits.items() if isinstance(v, StreamedImages)}
        if not streamed:
            return f"in memory: {held}"
        return f"streamed ({', '.join(f'{k} {human_bytes(n)}' for k, n in streamed.items())} of images read per pass); in memory: {held}"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split_sizes(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.splits.items()}

    @property
    def truncated(self) -> dict[str, int] | None:
        """Texts the tokenizer cut at max_length, per split; None for images (or a tokenizer that did not say)."""
        flags = {k: getattr(v, "is_truncated", None) for k, v in self.splits.items()}
        if not flags or any(f is None for f in flags.values()):
            return None
        return {k: int(f.sum()) for k, f in flags.items()}

    # --- loaders -------------------------------------------------------------------------------
    def _lengths(self, split: str, shuffle: bool) -> torch.Tensor | None:
        """Tokens per text when batches are bucketed by length. overfit_batches (the training split
        unshuffled) keeps the split's own first batches."""
        arrays = self.splits[split]
        if not self.bucket_by_length or arrays.field != "input_ids" or (split == "train" and not shuffle):
            return None
        return arrays.lengths()

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        arrays = self.splits[split]
        return batch_loader(
            arrays.inputs, arrays.labels, trainer=self.trainer, shuffle=shuffle, seed=self.seed,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            num_workers=self.stream_workers if isinstance(arrays, StreamedImages) else self.num_workers,
            pin_memory=torch.cuda.is_available(), field=arrays.field,
            lengths=self._lengths(split, shuffle), bucket_size_multiplier=self.bucket_size_multiplier,
            draw_weights=self.train_draw_weights() if split == "train" else None,
        )

    def train_dataloader(self) -> DataLoader:
        # overfit_batches means the same few batches every epoch.
        overfit = self.trainer is not None and bool(self.trainer.overfit_batches)
        if self.unlabeled_ratio and not overfit:
            return self._paired_loader()
        return self._loader("train", shuffle=not overfit)

    def _paired_loader(self) -> DataLoader:
        labeled, unlabeled = self.splits["train"], self.splits["unlabeled"]
        streamed = isinstance(labeled, StreamedImages) or isinstance(unlabeled, StreamedImages)
        return paired_loader(
            labeled, unlabeled, trainer=self.trainer, batch_size=self.batch_size, ratio=self.unlabeled_ratio, seed=self.seed,
            num_workers=self.stream_workers if streamed else self.num_workers, pin_memory=torch.cuda.is_available(),
            draw_weights=self.train_draw_weights(),
        )

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def on_after_batch_transfer(self, batch: Batch | SemiBatch, dataloader_idx: int) -> Batch | SemiBatch:
        self.transform.to(batch.inputs.device)
        training = self.trainer is not None and self.trainer.training
        seed_training_batch(self.trainer, self.seed)
        if isinstance(batch, SemiBatch):
            # Labelled, weak and strong views in this order, so every draw is a function of the batch's seed.
            labeled = self.transform.apply(batch.labeled, train=True)
            weak = self.transform.apply(batch.unlabeled, train=True)
            strong = self.transform.apply(batch.unlabeled, train=True, strong=self.strong_augment) if self.strong_augment else None
            return SemiBatch(labeled, weak, strong)
        return self.transform.apply(batch, train=training)
