"""data.unlabeled: an unlabelled pool beside the labelled splits, labels hidden, the labelled splits
untouched.

`rest` is the training pool that neither the subset nor validation drew; `source` is the source's
own pool (data=fashion_mnist_shifted, on tiny IDX files as in test_shifted_data.py).
"""

import hashlib

import numpy as np
import pytest
import torch

from test_shifted_data import fake_fashion  # noqa: F401  (a fixture)
from transferlab.data.arrays import UNLABELED
from transferlab.data.datamodule import TransferDataModule
from transferlab.data.unlabeled.pool import capped
from transferlab.errors import DataError

SYNTHETIC = {"num_classes": 4, "train_per_class": 20, "test_per_class": 5, "image_size": 8, "seed": 3}


def datamodule(unlabeled=None, source="synthetic", source_args=SYNTHETIC, **kw):
    kw = {"samples_per_class": 5, "val_per_class": 3, "seed": 11, **kw}
    dm = TransferDataModule(source, transform=None, source_args=source_args, unlabeled=unlabeled, **kw)
    dm.setup()
    return dm


def identities(images: torch.Tensor) -> set[str]:
    return {hashlib.sha1(image.numpy().tobytes()).hexdigest() for image in images}


@pytest.mark.parametrize("kw", [{}, {"samples_per_class": None, "train_fraction": 0.5}, {"val_per_class": None, "val_fraction": 0.2}])
def test_labelled_splits_are_identical_with_and_without_the_rest(kw):
    plain, with_rest = datamodule(**kw), datamodule("rest", **kw)
    assert set(plain.splits) == {"train", "val", "test"} and set(with_rest.splits) == {"train", "val", "test", "unlabeled"}
    for split in ("train", "val", "test"):
        assert torch.equal(plain.splits[split].images, with_rest.splits[split].images), split
        assert torch.equal(plain.splits[split].labels, with_rest.splits[split].labels), split


def test_the_rest_is_the_unused_pool_with_hidden_labels():
    dm = datamodule("rest")
    rest = dm.splits["unlabeled"]
    assert (rest.labels == UNLABELED).all()
    assert rest.classes == dm.classes
    sizes = dm.split_sizes()
    assert sizes["train"] + sizes["val"] + sizes["unlabeled"] == 4 * 20  # the whole training pool
    assert sizes["unlabeled"] == 4 * (20 - 5 - 3)
    # Synthetic images are all distinct (per-image noise), so identity by bytes is identity of images.
    seen = {k: identities(dm.splits[k].images) for k in ("train", "val", "unlabeled")}
    assert len(seen["unlabeled"]) == len(rest)
    assert not seen["unlabeled"] & seen["train"] and not seen["unlabeled"] & seen["val"]
    # The held bytes and the record's sizes count it like any split.
    assert dm.held_bytes()["unlabeled"] == rest.nbytes


def test_unlabeled_max_is_a_seeded_draw_that_leaves_the_labelled_splits_alone():
    full, capped_dm = datamodule("rest"), datamodule("rest", unlabeled_max=10)
    assert len(capped_dm.splits["unlabeled"]) == 10
    assert identities(capped_dm.splits["unlabeled"].images) <= identities(full.splits["unlabeled"].images)
    assert torch.equal(capped_dm.splits["train"].images, full.splits["train"].images)
    again = datamodule("rest", unlabeled_max=10)
    assert torch.equal(again.splits["unlabeled"].images, capped_dm.splits["unlabeled"].images)
    idx = torch.arange(100)
    assert torch.equal(capped(idx, 200, 0), idx)
    assert (capped(idx, 30, 0).diff() > 0).all()


def test_source_pool_is_the_sources_own(fake_fashion):  # noqa: F811
    args = {"root": str(fake_fashion), "download": False, "corruption": "blur"}
    dm = datamodule("source", source="fashion_mnist_shifted", source_args=args, samples_per_class=2, val_per_class=1)
    plain = datamodule(None, source="fashion_mnist_shifted", source_args=args, samples_per_class=2, val_per_class=1)
    assert len(dm.splits["unlabeled"]) == 30 and (dm.splits["unlabeled"].labels == UNLABELED).all()
    for split in ("train", "val", "test"):
        assert torch.equal(plain.splits[split].images, dm.splits[split].images)


def test_bad_unlabeled_settings_name_the_fix():
    with pytest.raises(DataError, match="data.unlabeled='all' is unknown: use rest"):
        datamodule("all")
    with pytest.raises(DataError, match="data.unlabeled=source but data.source=synthetic has no unlabelled pool: use data.unlabeled=rest"):
        datamodule("source")
    with pytest.raises(DataError, match="data.unlabeled=rest is empty .*lower data.samples_per_class"):
        datamodule("rest", samples_per_class=17)
    with pytest.raises(DataError, match="data.unlabeled_max=0 must be a whole number >= 1"):
        datamodule("rest", unlabeled_max=0)


def test_a_target_source_gives_the_test_split_and_the_unlabelled_pool(fake_fashion):  # noqa: F811
    args = {"root": str(fake_fashion), "download": False}
    target = {"source": "fashion_mnist_shifted", "source_args": {**args, "corruption": "blur"}}
    shifted = datamodule("source", source="fashion_mnist_shifted", source_args=target["source_args"], samples_per_class=2, val_per_class=1)
    dm = datamodule(None, source="fashion_mnist", source_args=args, samples_per_class=2, val_per_class=1, target=target)
    plain = datamodule(None, source="fashion_mnist", source_args=args, samples_per_class=2, val_per_class=1)
    assert dm.unlabeled == "target"
    for split in ("train", "val"):  # the labelled splits are the source's, as without a target
        assert torch.equal(dm.splits[split].images, plain.splits[split].images)
    assert torch.equal(dm.splits["test"].images, shifted.splits["test"].images)  # scored on the target
    assert not torch.equal(dm.splits["test"].images, plain.splits["test"].images)
    assert torch.equal(dm.splits["unlabeled"].images, shifted.splits["unlabeled"].images)
    assert (dm.splits["unlabeled"].labels == UNLABELED).all()


def test_a_target_without_a_pool_of_its_own_lends_its_training_images_with_labels_hidden():
    target = {"source": "synthetic", "source_args": {**SYNTHETIC, "seed": 9}}
    dm = datamodule(None, target=target)
    other = datamodule(None, source_args={**SYNTHETIC, "seed": 9}, samples_per_class=None, val_per_class=None, val_fraction=0.5)
    assert len(dm.splits["unlabeled"]) == SYNTHETIC["num_classes"] * SYNTHETIC["train_per_class"]
    assert (dm.splits["unlabeled"].labels == UNLABELED).all()
    assert identities(dm.splits["test"].images) == identities(other.splits["test"].images)


@pytest.mark.parametrize("target, unlabeled, message", [
    (None, "target", "data.unlabeled=target but data.target is null"),
    ({"source_args": {}}, None, "names no source"),
    ({"source": "synthetic", "root": "x"}, None, "data.target has no key root"),
    ({"source": "synthetic"}, "rest", "data.target is set, and data.unlabeled=rest"),
    ({"source": "synthetic", "source_args": {**SYNTHETIC, "num_classes": 3}}, None, "a target domain must have the source's classes"),
])
def test_bad_target_settings_name_the_fix(target, unlabeled, message):
    with pytest.raises(DataError, match=message):
        datamodule(unlabeled, target=target)


def test_a_folder_of_images_is_the_pool_at_the_labelled_splits_stored_format(tmp_path, caplog):
    from PIL import Image

    folder = tmp_path / "pool" / "nested"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    plain, dm = datamodule(None), datamodule(str(tmp_path / "pool"))
    pool = dm.splits["unlabeled"]
    assert len(pool) == 5 and (pool.labels == UNLABELED).all()
    assert pool.images.shape[1:] == plain.splits["train"].images.shape[1:]  # synthetic's stored channels and side
    for split in ("train", "val", "test"):
        assert torch.equal(plain.splits[split].images, dm.splits[split].images)
    assert "skipped 1 of 6 image files" in caplog.text
    assert len(datamodule(str(tmp_path / "pool"), unlabeled_max=2).splits["unlabeled"]) == 2


@pytest.mark.parametrize("kind", ["lines", "folder", "table"])
def test_unlabelled_texts_from_each_kind_of_path(tmp_path, kind):
    from transferlab.data.text.tokens import Tokens
    from transferlab.data.unlabeled.files import load_unlabeled_texts

    texts = ["first text", "second one", "a third"]
    if kind == "lines":
        path = tmp_path / "pool.txt"
        path.write_text("\n".join([texts[0], "", *texts[1:]]) + "\n")
    elif kind == "folder":
        path = tmp_path / "pool"
        path.mkdir()
        for i, t in enumerate(texts):
            (path / f"{i}.txt").write_text(t + "\n")
    else:
        path = tmp_path / "pool.csv"
        path.write_text("id,body\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))

    def tokenize(batch):
        ids = torch.tensor([[len(w) for w in t.split()] + [0] * (3 - len(t.split())) for t in batch])
        return Tokens(ids, pad_id=0, truncated=0)

    like = type("Like", (), {"classes": ["a", "b"]})()
    pool = load_unlabeled_texts(path, like, tokenize, column="body")
    assert pool.texts == texts and (pool.labels == UNLABELED).all() and pool.input_ids.shape == (3, 3)


def test_a_bad_unlabelled_path_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="is unknown: use rest .* a folder of images"):
        datamodule(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        datamodule(str(tmp_path / "empty"))
    (tmp_path / "one.png").write_bytes(b"x")
    with pytest.raises(DataError, match="is a file: for images pass a folder"):
        datamodule(str(tmp_path / "one.png"))
