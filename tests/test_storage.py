"""Where images wait while a run trains: right-sized in memory, or streamed from LitData chunks.

Streaming must change nothing but where the bytes are: the same batches in the same order for the
same seed (DDP shards and augmentation included), the same bad files skipped and counted, and a run
killed mid-epoch resumes to the same metrics."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data.datamodule import TransferDataModule
from transferlab.data.sources import SourceContext, load_source
from transferlab.data.sources.imagefolder import load_imagefolder
from transferlab.data.images.storage import Storage
from transferlab.data.images.stream_store import StreamedImages
from transferlab.data.images.transforms import AugmentConfig, BatchPreprocess
from transferlab.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


def image_folder(root: Path, classes=("a", "b", "c"), per_class=10, size=(20, 24), mode="RGB", seed=0) -> Path:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = size if not callable(size) else size(i)
            a = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
            Image.fromarray(a[..., 0] if channels == 1 else a, mode).save(root / c / f"{i}.png")
    return root


def streamed(tmp_path, **kw) -> Storage:
    return Storage(mode="stream", cache_dir=str(tmp_path / "cache"), optimize_workers=2, **kw)


# --- right-sized storage ---------------------------------------------------------------------


def test_small_grey_images_keep_their_size_and_one_channel(tmp_path):
    root = image_folder(tmp_path / "digits", per_class=6, size=(8, 8), mode="L")
    splits = load_imagefolder(str(root), image_size=256, val_fraction=0.0, test_fraction=0.3)
    assert splits.train.images.shape[1:] == (1, 8, 8)
    # The pixels are the files' own, not a resampling of them.
    first = np.array(Image.open(root / "a" / "0.png"))
    stored = torch.cat([splits.train.images, splits.test.images])
    assert any(torch.equal(img[0], torch.from_numpy(first)) for img in stored)


def test_large_images_are_stored_at_the_cap_and_a_colour_image_makes_three_channels(tmp_path):
    root = image_folder(tmp_path / "photos", classes=("a", "b"), per_class=4, size=(40, 50), mode="L")
    image_folder(root, classes=("c",), per_class=4, size=(40, 50), mode="RGB")
    splits = load_imagefolder(str(root), image_size=16, val_fraction=0.0, test_fraction=0.25)
    assert splits.train.images.shape[1:] == (3, 16, 16)


def test_mixed_sizes_store_the_largest_below_the_cap_and_say_what_was_enlarged(tmp_path, caplog):
    root = image_folder(tmp_path / "mixed", classes=("a", "b"), per_class=4, size=lambda i: (10, 12) if i else (30, 30))
    with caplog.at_level(logging.INFO, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=20, val_fraction=0.0, test_fraction=0.25)
    assert splits.train.images.shape[1:] == (3, 20, 20)
    assert "enlarged 6 images smaller than 20x20" in caplog.text


def test_the_log_says_the_bytes_each_split_holds(tmp_path, caplog):
    root = image_folder(tmp_path / "f", per_class=6, size=(8, 8), mode="L")
    dm = TransferDataModule("imagefolder", BatchPreprocess(16, [0.5], [0.5], in_chans=3), {"root": str(root)},
                            storage_size=32, val_per_class=1)
    with caplog.at_level(logging.INFO, logger="transferlab.data"):
        dm.setup()
    held = dm.held_bytes()
    assert held["train"] == len(dm.splits["train"]) * (64 + 8)  # 1x8x8 uint8 images and int64 labels
    assert "in memory: train" in caplog.text and "B, val" in caplog.text


def test_store_size_must_be_a_count(tmp_path):
    root = image_folder(tmp_path / "f", per_class=2)
    with pytest.raises(DataError, match="data.store_size"):
        load_imagefolder(str(root), image_size=0)


# --- streaming: the same data as in memory ---------------------------------------------------


def assert_same_splits(a, b):
    for name in ("train", "val", "test"):
        x, y = getattr(a, name), getattr(b, name)
        assert isinstance(y, StreamedImages) and len(x) == len(y)
        assert torch.equal(x.labels, y.labels)
        assert torch.equal(x.images, y.images[torch.arange(len(y))])


def test_streamed_splits_hold_what_memory_holds(tmp_path):
    root = image_folder(tmp_path / "f", size=lambda i: (20 + i, 24))
    memory = load_imagefolder(str(root), image_size=16, seed=3)
    stream = load_imagefolder(str(root), image_size=16, seed=3, storage=streamed(tmp_path))
    assert_same_splits(memory, stream)


def datamodule(root, storage, workers=0, **kw):
    transform = BatchPreprocess(12, [0.5] * 3, [0.25] * 3, augment=AugmentConfig(enabled=True))
    return TransferDataModule("imagefolder", transform, {"root": str(root), "test_fraction": 0.2}, storage_size=16,
                              storage=storage, stream_workers=workers, val_per_class=2, batch_size=4, seed=5, **kw)


def epoch_batches(dm, epoch):
    loader = dm.train_dataloader()
    loader.batch_sampler.set_epoch(epoch)
    return [(b.images.clone(), b.labels.clone()) for b in loader]


@pytest.mark.parametrize("workers", [0, 2])
def test_streamed_batches_equal_memory_batches_for_the_same_seed(tmp_path, workers):
    root = image_folder(tmp_path / "f", per_class=12)
    mem, stm = datamodule(root, Storage()), datamodule(root, streamed(tmp_path), workers=workers)
    mem.setup(), stm.setup()
    assert isinstance(stm.splits["train"], StreamedImages)
    for epoch in (0, 1):
        a, b = epoch_batches(mem, epoch), epoch_batches(stm, epoch)
        assert len(a) == len(b) > 1
        for (xa, ya), (xb, yb) in zip(a, b):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
        # The per-batch augmentation is the same code with the same draws.
        g1, g2 = torch.Generator().manual_seed(epoch), torch.Generator().manual_seed(epoch)
        assert torch.equal(mem.transform(a[0][0], train=True, generator=g1), stm.transform(b[0][0], train=True, generator=g2))
    for split in ("val_dataloader", "test_dataloader"):
        for x, y in zip(getattr(mem, split)(), getattr(stm, split)()):
            assert torch.equal(x.images, y.images) and torch.equal(x.labels, y.labels)


def test_streamed_batches_are_shared_out_across_ddp_ranks_as_in_memory(tmp_path):
    root = image_folder(tmp_path / "f", per_class=12)

    class Rank:
        def __init__(self, rank):
            self.global_rank, self.world_size, self.overfit_batches, self.training = rank, 2, 0, True

    for rank in (0, 1):
        mem, stm = datamodule(root, Storage()), datamodule(root, streamed(tmp_path))
        mem.trainer = stm.trainer = Rank(rank)
        mem.setup(), stm.setup()
        for (xa, ya), (xb, yb) in zip(epoch_batches(mem, 1), epoch_batches(stm, 1)):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_building_a_stream_leaves_the_random_generators_and_the_environment_as_they_were(tmp_path):
    import random

    root = image_folder(tmp_path / "f", per_class=4)
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    env = dict(os.environ)
    load_imagefolder(str(root), image_size=16, storage=streamed(tmp_path))
    after = torch.rand(1), np.random.rand(), random.random()
    torch.manual_seed(3), np.random.seed(3), random.seed(3)
    assert after == (torch.rand(1), np.random.rand(), random.random())
    assert dict(os.environ) == env


def test_the_stream_is_built_once_and_again_when_a_file_changes(tmp_path, monkeypatch):
    import litdata

    root = image_folder(tmp_path / "f", per_class=4)
    first = load_imagefolder(str(root), image_size=16, storage=streamed(tmp_path))

    def no_build(*a, **k):
        raise AssertionError("the chunks were built again")

    monkeypatch.setattr(litdata, "optimize", no_build)
    again = load_imagefolder(str(root), image_size=16, storage=streamed(tmp_path))
    assert torch.equal(first.train.images[torch.arange(len(first.train))], again.train.images[torch.arange(len(again.train))])
    monkeypatch.undo()

    edited = root / "a" / "0.png"
    Image.fromarray(np.zeros((20, 24, 3), np.uint8)).save(edited)
    os.utime(edited, ns=(1, 1))
    rebuilt = load_imagefolder(str(root), image_size=16, storage=streamed(tmp_path))
    assert rebuilt.train.reader.key != first.train.reader.key


def test_a_stream_whose_chunks_vanished_is_rebuilt(tmp_path, caplog):
    import shutil

    root = image_folder(tmp_path / "f", per_class=4)
    first = load_imagefolder(str(root), image_size=16, storage=streamed(tmp_path))
    shutil.rmtree(first.train.reader.input_dir)
    with caplog.at_level(logging.WARNING, logger="transferlab.data"):
        again = load_imagefolder(str(root), image_size=16, storage=streamed(tmp_path))
    assert "chunks" in caplog.text and "rebuilding" in caplog.text
    assert len(again.train.images[torch.arange(len(again.train))]) == len(first.train)


def corrupt_files(root: Path) -> None:
    (root / "a" / "garbage.png").write_bytes(b"not an image at all")  # fails at the header
    jpeg = root / "b" / "truncated.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(jpeg, "JPEG")
    jpeg.write_bytes(jpeg.read_bytes()[:400])  # a readable header, pixels cut off: fails while optimizing


def test_corrupt_files_are_skipped_and_counted_as_in_memory(tmp_path, caplog):
    root = image_folder(tmp_path / "f", per_class=6)
    corrupt_files(root)
    warnings = []
    for storage in (Storage(), streamed(tmp_path)):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
            splits = load_imagefolder(str(root), image_size=16, storage=storage)
        warnings.append([r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()])
        assert len(splits.train) + len(splits.val) + len(splits.test) == 18
    assert warnings[0] == warnings[1] and len(warnings[0]) == 1
    assert "skipped 2 of 20" in warnings[0][0] and "garbage.png" in warnings[0][0] and "truncated.jpg" in warnings[0][0]
    with pytest.raises(DataError, match="2 of 20 images .* cannot be read"):
        load_imagefolder(str(root), image_size=16, strict=True, storage=streamed(tmp_path))


def test_a_folder_with_nothing_readable_streams_into_the_in_memory_error(tmp_path):
    root = tmp_path / "f"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        (root / c / "x.png").write_bytes(b"not an image")
    errors = []
    for storage in (Storage(), streamed(tmp_path)):
        with pytest.raises(DataError) as e:
            load_imagefolder(str(root), image_size=16, storage=storage)
        errors.append(str(e.value))
    assert errors[0] == errors[1] and "no readable images" in errors[0]


# --- choosing, and bad input -----------------------------------------------------------------


def test_auto_streams_above_the_budget_and_holds_in_memory_below(tmp_path, caplog):
    root = image_folder(tmp_path / "f", per_class=4)
    with caplog.at_level(logging.INFO, logger="transferlab.data"):
        tiny = load_imagefolder(str(root), image_size=16, storage=Storage(mode="auto", memory_budget=100.0, cache_dir=str(tmp_path / "c")))
    assert isinstance(tiny.train, StreamedImages) and "over the budget" in caplog.text
    roomy = load_imagefolder(str(root), image_size=16, storage=Storage(mode="auto", memory_budget=0.5, cache_dir=str(tmp_path / "c")))
    assert not isinstance(roomy.train, StreamedImages)


@pytest.mark.parametrize("kw, match", [
    ({"mode": "disk"}, "data.storage='disk' is not one of memory, stream, auto"),
    ({"memory_budget": 0}, "data.memory_budget=0 is not a positive number"),
    ({"memory_budget": "lots"}, "data.memory_budget='lots'"),
    ({"optimize_workers": 0}, "data.stream.optimize_workers=0"),
    ({"chunk_bytes": "64 megs"}, "data.stream.chunk_bytes='64 megs' is not a size"),
])
def test_bad_storage_settings_are_one_line_errors(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        Storage(**kw)
    assert "\n" not in str(e.value)


def test_a_source_that_cannot_stream_says_so(tmp_path):
    with pytest.raises(DataError, match="data.source=synthetic is held in memory and cannot stream.*imagefolder") as e:
        load_source("synthetic", {}, SourceContext(storage=streamed(tmp_path)))
    assert "\n" not in str(e.value)


def test_streaming_needs_a_cache_dir(tmp_path):
    root = image_folder(tmp_path / "f", per_class=4)
    with pytest.raises(ConfigError, match="paths.cache_dir"):
        load_imagefolder(str(root), image_size=16, storage=Storage(mode="stream"))


# --- whole runs ------------------------------------------------------------------------------

PLUGINS = Path(__file__).resolve().parent / "plugins"
RUN = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=imagefolder", "data.image_size=32",
    "data.batch_size=8", "data.val_per_class=4", "data.source_args.test_fraction=0.2", "trainer.accelerator=cpu",
    "trainer.max_epochs=3", "strategy=full", "+trainer.enable_progress_bar=false",
]
KILL = ["+callbacks.kill._target_=killer.KillAt", "+callbacks.kill.epoch=1", "+callbacks.kill.batch=2"]


def train(root: Path, *args: str, expect: int = 0) -> dict | None:
    env = {**os.environ, "TRANSFERLAB_ROOT": str(root), "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    done = sorted((root / "logs").glob("*/runs/*/metrics.json"))
    return json.loads(done[-1].read_text()) if done else None


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_folder(tmp_path_factory.mktemp("images") / "f", per_class=16, size=(36, 40))


@pytest.mark.slow
def test_a_streamed_run_gives_the_in_memory_run_s_metrics_and_resumes_exactly(folder, tmp_path):
    data = [f"data.source_args.root={folder}"]
    memory = train(tmp_path / "memory", *RUN, *data, "task_name=m")
    stream = train(tmp_path / "stream", *RUN, *data, "data.storage=stream", "data.stream.num_workers=2", "task_name=s")
    assert stream["val"] == memory["val"] and stream["test"] == memory["test"]

    killed = tmp_path / "killed"
    # With workers: their first batches are drawn as the iterator is made, which a resume must get right.
    args = [*RUN, *data, "data.storage=stream", "data.stream.num_workers=2", "task_name=k", "auto_resume=true"]
    assert train(killed, *args, *KILL, expect=-9) is None  # SIGKILL mid-epoch 1
    resumed = train(killed, *args)
    assert resumed["resumed_from"]
    for split in ("val", "test"):
        for k, v in memory[split].items():
            assert abs(resumed[split][k] - v) <= 1e-4, (split, k)


@pytest.mark.parametrize("knobs", [
    {"max_epochs": 3}, {"max_epochs": 2, "limit_train_batches": 0.5}, {"max_epochs": 2, "limit_train_batches": 3},
    {"max_epochs": 4, "accumulate_grad_batches": 3}, {"max_epochs": 5, "max_steps": 7}, {"fast_dev_run": 2},
    {"max_epochs": 1, "overfit_batches": 2},
])
def test_planned_steps_is_lightnings_count_without_making_the_iterator(knobs):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, TensorDataset

    from transferlab.engine.module import planned_steps

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 2)

        def training_step(self, batch, _):
            return self.layer(batch[0]).sum()

        def configure_optimizers(self):
            self.seen = (planned_steps(self.trainer, len(self.loader)), self.trainer.estimated_stepping_batches)
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = Tiny()
    module.loader = DataLoader(TensorDataset(torch.randn(44, 2)), batch_size=4)  # 11 batches
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, **knobs)
    trainer.fit(module, train_dataloaders=module.loader)
    assert module.seen[0] == module.seen[1]


@pytest.mark.parametrize("strategy", ["extract", "pixel_lr"])
def test_strategies_that_read_whole_splits_read_streamed_ones_alike(tmp_path, monkeypatch, capsys, strategy):
    """extract hashes and walks each split for its feature cache, pixel_lr reads every image: both
    through the StreamedView, with the in-memory run's results."""
    from test_bad_input import run

    from transferlab import train as train_cli

    root = image_folder(tmp_path / "f", per_class=10, size=(36, 40))
    results = {}
    for storage in ("memory", "stream"):
        args = [*RUN, f"data.source_args.root={root}", f"strategy={strategy}", f"data.storage={storage}", "trainer.max_epochs=2",
                f"task_name={storage}"]
        code, _, err = run(train_cli.main, args, tmp_path / storage, monkeypatch, capsys)
        assert code == 0, err
        (done,) = (tmp_path / storage / "logs" / storage / "runs").glob("*/metrics.json")
        results[storage] = json.loads(done.read_text())
    assert results["stream"]["test"] == results["memory"]["test"]


def test_take_moves_rows_in_place_for_a_large_ordered_subset_and_copies_otherwise():
    from transferlab.data.arrays import ImageArrays

    def arrays():
        n = 3000
        return ImageArrays(torch.arange(n, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 1, 1, 1).repeat(1, 1, 2, 2).contiguous(),
                           torch.arange(n) % 7, ["c"] * 7)

    big = torch.sort(torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:2500]).values
    expected = arrays().subset(big)
    source = arrays()
    taken = source.take(big)
    assert torch.equal(taken.images, expected.images) and torch.equal(taken.labels, expected.labels)
    assert taken.images.data_ptr() == source.images.data_ptr()  # the same memory, not a copy
    for idx in (big[:100], big.flip(0)):  # small, or not ascending: a copy, equal to subset
        source = arrays()
        taken = source.take(idx)
        assert torch.equal(taken.images, arrays().subset(idx).images) and taken.images.data_ptr() != source.images.data_ptr()


@pytest.mark.parametrize("workers", [0, 2])
def test_unlabelled_batches_stream_as_they_are_held_in_memory(tmp_path, workers):
    root = image_folder(tmp_path / "f", per_class=12)
    kw = {"unlabeled": "rest", "samples_per_class": 4, "unlabeled_ratio": 2}
    mem, stm = datamodule(root, Storage(), **kw), datamodule(root, streamed(tmp_path), workers=workers, **kw)
    mem.setup(), stm.setup()
    assert isinstance(stm.splits["unlabeled"], StreamedImages)
    for epoch in (0, 1):
        loaders = [dm.train_dataloader() for dm in (mem, stm)]
        for loader in loaders:
            loader.batch_sampler.set_epoch(epoch)
        a, b = (list(loader) for loader in loaders)
        assert len(a) == len(b) > 1
        for x, y in zip(a, b):
            assert torch.equal(x.labeled.images, y.labeled.images) and torch.equal(x.labeled.labels, y.labeled.labels)
            assert torch.equal(x.unlabeled.images, y.unlabeled.images) and (y.unlabeled.labels == -1).all()
