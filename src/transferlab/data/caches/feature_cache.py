"""Feature cache: the fast path for `strategy=extract`.

With a frozen backbone and no train-time augmentation, the backbone maps each image to the same
feature vector in every epoch, so it runs once per split instead of once per epoch: features are
computed in eval mode under `torch.inference_mode`, batched, from the eval preprocessing of
BatchPreprocess, stored under `paths.cache_dir`, and reused by later runs and sweep jobs.

A cache file is named by the hash of everything that changes its contents (`FeatureKey`): the timm
model and timm version, the weights (their description and a hash of the backbone's tensors as
loaded, so a re-downloaded or edited weights file misses), the preprocessing, the view (the image
or its mirror, for `data.eval_hflip`), the split's uint8 image bytes, and a format version. The
file stores that key and the feature shape; a file that cannot be read, holds another key or the
wrong shape is logged and rebuilt. Files are written to a temporary name and renamed, so readers
never see half a file; a lock per file makes parallel sweep jobs wait for one extraction instead
of each doing it.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader

from transferlab.data.batch import Batch
from transferlab.data.caches.cache_files import CacheFileError, CacheStats, JsonKey, load_blob, read_or_build, safe_name, save_blob
from transferlab.data.loaders import batch_loader
from transferlab.data.images.transforms import BatchPreprocess
from transferlab.utils.seeding import seed_training_batch

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
VIEWS = ("image", "hflip")  # the eval view, and its mirror (test-time augmentation)


# --- hashing -------------------------------------------------------------------------------------
def _update_with_tensor(h, t: torch.Tensor) -> None:
    t = t.detach().cpu().contiguous()  # channels_last tensors hash like their NCHW copy
    h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
    if t.numel():
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))


def tensor_digest(t: torch.Tensor) -> str:
    """Hash of a tensor's dtype, shape and bytes (a 60k-image uint8 split takes well under a second)."""
    h = hashlib.blake2b(digest_size=20)
    _update_with_tensor(h, t)
    return h.hexdigest()


def state_dict_digest(module: nn.Module) -> str:
    """Hash of every parameter and buffer (names included): the identity of the weights as loaded."""
    h = hashlib.blake2b(digest_size=20)
    for name, t in module.state_dict().items():
        h.update(name.encode() + b"\0")
        _update_with_tensor(h, t)
    return h.hexdigest()


def key_args_of(encoder) -> dict:
    """The FeatureKey fields a Backbone decides: its name, its weights as described and as loaded,
    its preprocessing."""
    return {
        "model": encoder.name,
        "weights": encoder.weights,
        "weights_digest": state_dict_digest(encoder.model),
        "preprocess": encoder.input_spec(),
    }


@dataclass(frozen=True)
class FeatureKey(JsonKey):
    """Everything that changes the features of one split. Two equal keys give equal features."""

    model: str  # timm model name
    weights: str  # description of the weights source (model.weights and the file it loaded)
    weights_digest: str  # hash of the backbone's state dict as loaded
    preprocess: tuple  # Preprocess.as_dict() items, sorted (json-able)
    data_digest: str  # hash of the split's uint8 images
    num_images: int
    view: str = "image"
    timm_version: str = ""
    format: int = FORMAT_VERSION

    def as_dict(self) -> dict:
        d = asdict(self)
        d["preprocess"] = {k: v for k, v in self.preprocess}
        return d


def make_key(model: str, weights: str, weights_digest: str, preprocess: dict, images: torch.Tensor, view: str = "image",
             data_digest: str | None = None) -> FeatureKey:
    """The key of `images`' features; `data_digest` = tensor_digest(images) when already known."""
    import timm

    if view not in VIEWS:
        raise ValueError(f"view={view!r}: use one of {VIEWS}")
    items = tuple(sorted((k, tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in preprocess.items()))
    return FeatureKey(
        model=model,
        weights=weights,
        weights_digest=weights_digest,
        preprocess=items,
        data_digest=data_digest or tensor_digest(images),
        num_images=int(len(images)),
        view=view,
        timm_version=timm.__version__,
    )


# --- extraction ----------------------------------------------------------------------------------
@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Eval mode for the block, then every submodule's own mode back (a frozen group's norm layers
    stay in eval mode under the plan; a blanket .train(True) afterwards would undo that)."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode


def extract_features(
    encoder,
    transform: BatchPreprocess,
    images: torch.Tensor,
    batch_size: int = 256,
    view: str = "image",
    device: torch.device | str | None = None,
    field: str = "images",
) -> torch.Tensor:
    """Pooled features [N, D] (float32, CPU) of stored inputs (uint8 images [N, C, H, W], or token
    ids with field="input_ids"), as the model sees them at eval time: the eval transform (and the
    mirror for view="hflip"), backbone in eval mode.

    `encoder`: a Backbone (models/backbone.py): its `model` is put in eval mode, `features(batch)` runs it.
    """
    if view not in VIEWS:
        raise ValueError(f"view={view!r}: use one of {VIEWS}")
    model = encoder.model
    home = next(model.parameters()).device
    device = torch.device(device) if device is not None else home
    out = []
    # Moved outside inference mode, so the parameters never become inference tensors. A GPU run
    # extracts on the GPU; the Trainer moves the module again when it fits.
    model.to(device)
    transform.to(device)
    try:
        with _eval_mode(model), torch.inference_mode():
            for start in range(0, len(images), batch_size):
                chunk = images[start : start + batch_size].to(device, non_blocking=True)
                batch = transform.apply(Batch(**{field: chunk}), train=False)
                if view == "hflip":
                    batch = batch.with_inputs(images=batch.images.flip(-1))
                out.append(encoder.features(batch).float().cpu())
    finally:
        model.to(home)
    return torch.cat(out) if out else torch.empty(0, int(encoder.num_features))


# --- the cache -----------------------------------------------------------------------------------
class FeatureCache:
    """Feature files under `root`, one per (split, view), named by their key's hash."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser().resolve()
        self.stats = CacheStats()

    def path_for(self, key: FeatureKey, split: str = "split") -> Path:
        return self.root / "features" / safe_name(key.model) / f"{split}-{key.view}-{key.digest()[:32]}.pt"

    @staticmethod
    def read(path: Path, key: FeatureKey, num_features: int) -> torch.Tensor:
        """The features stored at `path` for `key`; CacheFileError if they cannot be trusted."""
        blob = load_blob(path, FORMAT_VERSION, key, "model, weights, preprocessing or data")
        features = blob.get("features")
        expected = (key.num_images, num_features)
        if not isinstance(features, torch.Tensor) or tuple(features.shape) != expected or list(blob.get("shape", ())) != list(expected):
            shape = tuple(features.shape) if isinstance(features, torch.Tensor) else None
            raise CacheFileError(f"features of shape {shape}, expected {expected}")
        if features.dtype != torch.float32 or not torch.isfinite(features).all():
            raise CacheFileError(f"features are {features.dtype} or not all finite")
        return features

    def get_or_build(self, key: FeatureKey, num_features: int, build, split: str = "split") -> torch.Tensor:
        """Cached features for `key`, or `build()`'s result, stored for next time."""
        expected = (key.num_images, num_features)

        def extract() -> torch.Tensor:
            t0 = time.perf_counter()
            features = build().float().contiguous()
            self.stats.build_s += time.perf_counter() - t0
            if tuple(features.shape) != expected:
                raise RuntimeError(f"feature extraction gave {tuple(features.shape)}, expected {expected}")
            return features

        def write(path: Path, features: torch.Tensor) -> None:
            save_blob(path, FORMAT_VERSION, key, {"shape": list(expected), "features": features})

        path = self.path_for(key, split)
        got = read_or_build(path, lambda p: self.read(p, key, num_features), extract, write, log, "feature cache")
        if got.hit:
            self.stats.hits += 1
            log.info("feature cache hit: %s %s %s", split, key.view, path)
        else:
            if got.stale is None:
                self.stats.built += 1
            else:
                self.stats.rebuilt += 1
            log.info("feature cache: %s %s features %s written to %s", split, key.view, expected, path)
        return got.value


# --- features as a DataModule --------------------------------------------------------------------
class FeatureDataModule(pl.LightningDataModule):
    """Cached backbone features of an image DataModule's splits, served in the same batches.

    Training batches are [B, D] features of the eval view. With test-time mirroring
    (`views=("image", "hflip")`) val/test batches are [B, 2, D]: TransferModule averages the head's
    logits over the views, as it averages over an image and its mirror.
    """

    def __init__(self, images_dm, cache: FeatureCache, encoder, key_args: dict, *,
                 eval_views: tuple[str, ...] = ("image",), device: str | torch.device = "cpu"):
        super().__init__()
        self.images_dm = images_dm
        self.cache = cache
        self.encoder = encoder  # a Backbone (models/backbone.py)
        self.key_args = key_args  # model, weights, weights_digest, preprocess
        self.eval_views = tuple(eval_views)
        self.device = torch.device(device)
        self.batch_size = images_dm.batch_size
        self.eval_batch_size = images_dm.eval_batch_size
        self.num_features = int(encoder.num_features)
        self._features: dict[tuple[str, str], torch.Tensor] = {}
        self._data_digests: dict[str, str] = {}  # one hash of each split's images, shared by its views

    @property
    def classes(self) -> list[str]:
        return self.images_dm.classes

    @property
    def num_classes(self) -> int:
        return self.images_dm.num_classes

    def split_sizes(self) -> dict[str, int]:
        return self.images_dm.split_sizes()

    def features(self, split: str, view: str = "image") -> torch.Tensor:
        if (split, view) not in self._features:
            arrays = self.images_dm.splits[split]
            images = arrays.inputs
            if split not in self._data_digests:
                # A streamed split names its rows instead of being read whole to be hashed.
                self._data_digests[split] = images.digest() if hasattr(images, "digest") else tensor_digest(images)
            key = make_key(images=images, view=view, data_digest=self._data_digests[split], **self.key_args)
            build = lambda: extract_features(  # noqa: E731
                self.encoder, self.images_dm.transform, images, batch_size=self.eval_batch_size, view=view, device=self.device,
                field=arrays.field,
            )
            self._features[(split, view)] = self.cache.get_or_build(key, self.num_features, build, split=split)
        return self._features[(split, view)]

    def eval_features(self, split: str) -> torch.Tensor:
        """[N, D], or [N, V, D] with several views."""
        views = [self.features(split, v) for v in self.eval_views]
        return views[0] if len(views) == 1 else torch.stack(views, dim=1)

    def labels(self, split: str) -> torch.Tensor:
        return self.images_dm.splits[split].labels

    def setup(self, stage: str | None = None) -> None:
        self.images_dm.setup()
        # Build what this stage needs up front, so the time shows up before the first step.
        splits = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "fit", ())
        for split in splits:
            self.features(split) if split == "train" else self.eval_features(split)

    # Under DDP (spawned ranks, transferlab.utils.ddp) the extraction runs in the ranks; metrics.json
    # reports rank 0's cache hits and extraction time from here.
    def rank_zero_state(self, trainer) -> dict:
        return {"stats": self.cache.stats}

    def load_rank_zero_state(self, trainer, state: dict) -> None:
        self.cache.stats = state["stats"]

    def _loader(self, x: torch.Tensor, y: torch.Tensor, shuffle: bool, draw_weights: torch.Tensor | None = None) -> DataLoader:
        return batch_loader(
            x, y, trainer=self.trainer, shuffle=shuffle, seed=self.images_dm.seed,
            batch_size=self.batch_size if shuffle else self.eval_batch_size, field="features", draw_weights=draw_weights,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.features("train"), self.labels("train"), shuffle=True, draw_weights=self._draw_weights())

    def _draw_weights(self) -> torch.Tensor | None:
        draw = getattr(self.images_dm, "train_draw_weights", None)  # a stand-in DataModule may not have one
        return draw() if draw is not None else None

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.eval_features("val"), self.labels("val"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.eval_features("test"), self.labels("test"), shuffle=False)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        seed_training_batch(self.trainer, self.images_dm.seed)  # the head's dropout, as on images
        return batch
