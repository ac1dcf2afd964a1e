import gzip
import os
import logging
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from transferlab.data.arrays import ImageArrays
from transferlab.data.sources import fashion_mnist
from transferlab.data.sources.cifar10 import load_cifar10
from transferlab.data.sources.fashion_mnist import load_fashion_mnist, read_idx
from transferlab.data.sources.imagefolder import load_imagefolder
from transferlab.data.sources.synthetic import make_synthetic
from transferlab.errors import DataError

# --- IDX / Fashion-MNIST ---------------------------------------------------------------------


def idx_bytes(array: np.ndarray) -> bytes:
    assert array.dtype == np.uint8
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_fashion(folder: Path, n_train=12, n_test=5, gz=False, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, a in arrays.items():
        data = idx_bytes(a)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", tmp_path / "no-debian-here")


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_raw_and_gz(tmp_path, gz):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(idx_bytes(a)) if gz else idx_bytes(a))
    out = read_idx(path, ndim=3)
    assert out.shape == (2, 3, 4) and out.dtype == np.uint8 and out.flags.writeable
    np.testing.assert_array_equal(out, a)


@pytest.mark.parametrize("gz", [False, True])
def test_fashion_from_root_flat(tmp_path, no_debian, gz):
    arrays = write_fashion(tmp_path, gz=gz)
    splits = load_fashion_mnist(str(tmp_path), download=False)
    assert splits.train.images.shape == (12, 1, 28, 28) and splits.train.images.dtype == torch.uint8
    assert splits.test.images.shape == (5, 1, 28, 28)
    assert splits.train.labels.dtype == torch.int64 and splits.val is None
    np.testing.assert_array_equal(splits.train.images[:, 0].numpy(), arrays["train-images-idx3-ubyte"])
    np.testing.assert_array_equal(splits.test.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert splits.train.classes[0] == "T-shirt/top" and splits.train.classes[9] == "Ankle boot"


def test_fashion_from_torchvision_layout(tmp_path, no_debian):
    write_fashion(tmp_path / "FashionMNIST" / "raw", n_train=7, gz=True)
    splits = load_fashion_mnist(str(tmp_path), download=False)
    assert len(splits.train) == 7 and len(splits.test) == 5


def test_fashion_falls_back_to_debian_folder(tmp_path, monkeypatch):
    write_fashion(tmp_path / "debian", n_train=3, gz=True)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST", tmp_path / "debian")
    splits = load_fashion_mnist(str(tmp_path / "empty"), download=False)
    assert len(splits.train) == 3


def test_truncated_idx_names_the_file(tmp_path, no_debian):
    write_fashion(tmp_path)
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as e:
        load_fashion_mnist(str(tmp_path), download=False)
    assert str(path) in str(e.value) and "truncated or corrupt" in str(e.value)
    assert "fetch it again" in str(e.value)


def test_truncated_gzip_names_the_file(tmp_path, no_debian):
    write_fashion(tmp_path, gz=True)
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(DataError, match="cannot read IDX file .*t10k-labels-idx1-ubyte.gz"):
        load_fashion_mnist(str(tmp_path), download=False)


def test_bad_magic_is_an_error(tmp_path):
    path = tmp_path / "x"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(DataError, match=r"is not an IDX file \(bad magic number 89504e47\)"):
        read_idx(path)


def test_labels_and_images_swapped_is_an_error(tmp_path):
    write_fashion(tmp_path)
    with pytest.raises(DataError, match="holds a 1-D array, expected 3-D"):
        read_idx(tmp_path / "train-labels-idx1-ubyte", ndim=3)


def test_fashion_missing_everywhere_names_places_and_fix(tmp_path, no_debian):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as e:
        load_fashion_mnist(str(tmp_path / "empty"), download=False)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert "data.source_args.root" in msg
    assert str(tmp_path / "empty") in msg and "no-debian-here" in msg
    assert "download=false" in msg
    assert len(msg.splitlines()) <= 2


def test_fashion_download_failure_is_caught(tmp_path, no_debian, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as e:
        load_fashion_mnist(str(tmp_path), download=True)
    assert "failed: RuntimeError: Error downloading" in str(e.value)
    assert "apt-get install dataset-fashion-mnist" in str(e.value)


@pytest.mark.skipif(
    not Path("/usr/share/datasets/fashion-mnist").is_dir(),
    reason="Debian's Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
def test_real_debian_fashion_mnist():
    splits = load_fashion_mnist(None, download=False)
    assert splits.train.images.shape == (60000, 1, 28, 28)
    assert splits.test.images.shape == (10000, 1, 28, 28)
    assert splits.train.images.is_contiguous()
    for s in (splits.train, splits.test):
        assert int(s.labels.min()) == 0 and int(s.labels.max()) == 9
    assert torch.bincount(splits.train.labels).tolist() == [6000] * 10


# --- CIFAR-10 --------------------------------------------------------------------------------


def test_cifar_missing_offline_gives_fix(tmp_path):
    with pytest.raises(DataError) as e:
        load_cifar10(str(tmp_path), download=False)
    msg = str(e.value)
    assert "not found and download=false" in msg and "cifar-10-batches-py" in msg and "download=true" in msg


def test_cifar_needs_a_root():
    with pytest.raises(DataError, match="data.source_args.root is unset"):
        load_cifar10(None)


# --- Synthetic -------------------------------------------------------------------------------


def test_synthetic_shapes_and_determinism():
    a = make_synthetic(num_classes=3, train_per_class=10, test_per_class=4, image_size=16, channels=3, seed=1)
    b = make_synthetic(num_classes=3, train_per_class=10, test_per_class=4, image_size=16, channels=3, seed=1)
    c = make_synthetic(num_classes=3, train_per_class=10, test_per_class=4, image_size=16, channels=3, seed=2)
    assert a.train.images.shape == (30, 3, 16, 16) and a.test.images.shape == (12, 3, 16, 16)
    assert a.train.images.dtype == torch.uint8 and a.train.labels.dtype == torch.int64
    assert torch.bincount(a.train.labels).tolist() == [10, 10, 10]
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.images, b.test.images)
    assert not torch.equal(a.train.images, c.train.images)
    # No two images alike: the task must be learned, not memorised.
    flat = a.train.images.flatten(1)
    assert len({tuple(row.tolist()) for row in flat}) == len(flat)
    assert make_synthetic(channels=1, image_size=8).train.images.shape[1:] == (1, 8, 8)


@pytest.mark.parametrize("channels", [1, 3])
def test_synthetic_is_learnable(channels):
    splits = make_synthetic(num_classes=6, channels=channels, seed=4)
    x = splits.train.images.float().flatten(1)
    means = torch.stack([x[splits.train.labels == c].mean(0) for c in range(6)])
    pred = torch.cdist(splits.test.images.float().flatten(1), means).argmin(1)
    accuracy = (pred == splits.test.labels).float().mean().item()
    assert accuracy > 0.8


def test_image_arrays_subset():
    splits = make_synthetic(num_classes=2, train_per_class=5, test_per_class=1, image_size=8)
    sub = splits.train.subset(torch.tensor([9, 0, 3]))
    assert len(sub) == 3 and sub.labels.tolist() == [1, 0, 0]
    assert torch.equal(sub.images[0], splits.train.images[9]) and sub.images.is_contiguous()
    assert sub.classes == splits.train.classes and sub.classes is not splits.train.classes
    with pytest.raises(ValueError, match="uint8"):
        ImageArrays(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"])


# --- ImageFolder -----------------------------------------------------------------------------


def save_image(path: Path, mode: str, size=(24, 16), value=None, fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    # Seeded by class folder and name: the same name in two classes must not be the same image.
    rng = np.random.default_rng(zlib.crc32("/".join(path.parts[-3:]).encode()))
    if mode == "I;16":
        a = np.full((h, w), value, np.uint16) if value is not None else rng.integers(0, 65536, (h, w), dtype=np.uint16)
        img = Image.fromarray(a)
        assert img.mode == "I;16"
    elif mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB").quantize(8)
        img.info["transparency"] = 0
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1, "LA": 2}[mode]
        a = rng.integers(0, 256, (h, w, channels), dtype=np.uint8)
        img = Image.fromarray(a[..., 0] if channels == 1 else a, mode)
    if mode == "P":
        img.save(path, transparency=0)
    else:
        img.save(path, fmt)
    return path


def truncated_jpeg(path: Path):
    save_image(path, "RGB", size=(64, 64), fmt="JPEG")
    path.write_bytes(path.read_bytes()[:300])


def flat_tree(root: Path, per_class=5, broken=True):
    modes = ["RGB", "L", "RGBA", "P", "I;16", "LA"]
    for c in ("cat", "dog", "eel"):
        for i in range(per_class):
            mode = modes[i % len(modes)]
            save_image(root / c / f"{i}.png", mode)
        save_image(root / c / "extra.jpg", "RGB", size=(30, 40), fmt="JPEG")
        save_image(root / c / "sub" / "nested.JPEG", "L", fmt="JPEG")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "dog" / ".DS_Store").write_bytes(b"\x00\x01junk")
    (root / "README.md").write_text("readme at the root")
    if broken:
        truncated_jpeg(root / "eel" / "broken.jpg")
    return per_class + 2  # images per class that decode


def test_imagefolder_flat_modes_and_carving(tmp_path, caplog):
    root = tmp_path / "flat"
    n = flat_tree(root, per_class=8)
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=12, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert splits.train.classes == ["cat", "dog", "eel"]
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert total == 3 * n  # .txt, .DS_Store, README ignored; the truncated JPEG skipped
    for s in (splits.train, splits.val, splits.test):
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (3, 12, 12) and s.images.is_contiguous()
    # Stratified: 10 per class -> 2 test, then 8 -> 2 val (round half up of 1.6), 6 train.
    assert torch.bincount(splits.test.labels).tolist() == [2, 2, 2]
    assert torch.bincount(splits.val.labels).tolist() == [2, 2, 2]
    assert torch.bincount(splits.train.labels).tolist() == [6, 6, 6]
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "skipped 1 of" in warning and "broken.jpg" in warning

    again = load_imagefolder(str(root), image_size=12, val_fraction=0.2, test_fraction=0.2, seed=0)
    assert torch.equal(again.test.images, splits.test.images) and torch.equal(again.train.labels, splits.train.labels)
    other = load_imagefolder(str(root), image_size=12, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert not torch.equal(other.test.images, splits.test.images)


def test_imagefolder_no_val_when_fraction_zero(tmp_path):
    root = tmp_path / "flat"
    n = flat_tree(root, per_class=3, broken=False)
    splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.2)
    assert splits.val is None and len(splits.train) + len(splits.test) == 3 * n


def test_imagefolder_strict_raises_on_truncated(tmp_path):
    root = tmp_path / "flat"
    flat_tree(root, per_class=2)
    with pytest.raises(DataError) as e:
        load_imagefolder(str(root), image_size=8, strict=True)
    msg = str(e.value)
    assert "1 of" in msg and "broken.jpg" in msg and "strict=false" in msg


def test_imagefolder_sixteen_bit_is_scaled_not_clipped(tmp_path):
    root = tmp_path / "flat"
    save_image(root / "a" / "mid.png", "I;16", value=257 * 100)
    save_image(root / "a" / "full.png", "I;16", value=65535)
    save_image(root / "b" / "x.png", "RGB")
    save_image(root / "b" / "y.png", "RGB")
    splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.5, seed=0)
    everything = torch.cat([splits.train.images[splits.train.labels == 0], splits.test.images[splits.test.labels == 0]])
    assert sorted(int(img.float().mean()) for img in everything) == [100, 255]


def test_imagefolder_resizes_short_side_and_centre_crops(tmp_path):
    root = tmp_path / "flat"
    # 60x20, thirds blue / green / red: shorter side 20 -> 10, width 30, the centre crop is the green third.
    a = np.zeros((20, 60, 3), np.uint8)
    a[:, :20, 2], a[:, 20:40, 1], a[:, 40:, 0] = 255, 255, 255
    for k, c in enumerate(("a", "b")):
        for i in range(2):
            (root / c).mkdir(parents=True, exist_ok=True)
            # One pixel in the blue third, outside the crop, differs: no two files are the same image.
            b = a.copy()
            b[0, 2 * k + i, 0] = 1
            Image.fromarray(b).save(root / c / f"{i}.png")
    splits = load_imagefolder(str(root), image_size=10, val_fraction=0.0, test_fraction=0.5)
    img = splits.train.images[0].float()
    assert img.shape == (3, 10, 10)
    assert img[1, :, 2:8].min() >= 250 and img[0, :, 2:8].max() <= 5 and img[2, :, 2:8].max() <= 5


def test_imagefolder_split_folders(tmp_path):
    root = tmp_path / "splits"
    for c in ("a", "b"):
        for i in range(6):
            save_image(root / "train" / c / f"{i}.png", "RGB")
        save_image(root / "val" / c / "v.png", "L")
    save_image(root / "test" / "a" / "t.png", "RGB")
    (root / "train" / "b" / "info.txt").write_text("x")
    splits = load_imagefolder(str(root), image_size=8, val_fraction=0.5, test_fraction=0.5)
    # Folders win over fractions: nothing is carved from train.
    assert len(splits.train) == 12 and len(splits.val) == 2 and len(splits.test) == 1
    assert splits.test.labels.tolist() == [0] and splits.val.classes == ["a", "b"]


def test_imagefolder_missing_test_folder_is_carved(tmp_path):
    root = tmp_path / "splits"
    for c in ("a", "b"):
        for i in range(5):
            save_image(root / "train" / c / f"{i}.png", "RGB")
        save_image(root / "val" / c / "v.png", "RGB")
    splits = load_imagefolder(str(root), image_size=8, test_fraction=0.2, seed=3)
    assert torch.bincount(splits.test.labels).tolist() == [1, 1]
    assert len(splits.train) == 8 and len(splits.val) == 2


def test_imagefolder_unknown_class_in_val(tmp_path):
    root = tmp_path / "splits"
    save_image(root / "train" / "a" / "0.png", "RGB")
    save_image(root / "val" / "zebra" / "0.png", "RGB")
    with pytest.raises(DataError, match="val/ has classes that train/ lacks: zebra"):
        load_imagefolder(str(root), image_size=8)


def test_imagefolder_empty_class_folder_is_named(tmp_path):
    root = tmp_path / "flat"
    save_image(root / "a" / "0.png", "RGB")
    (root / "empty_class").mkdir()
    (root / "empty_class" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError) as e:
        load_imagefolder(str(root), image_size=8)
    assert "empty_class" in str(e.value) and "add images or remove the folder" in str(e.value)


def test_imagefolder_missing_root(tmp_path):
    with pytest.raises(DataError) as e:
        load_imagefolder(str(tmp_path / "nope"), image_size=8)
    assert "does not exist" in str(e.value) and "<class>/<image>" in str(e.value)


def test_imagefolder_root_without_class_folders(tmp_path):
    save_image(tmp_path / "loose.png", "RGB")
    with pytest.raises(DataError) as e:
        load_imagefolder(str(tmp_path), image_size=8)
    assert "no class folders (it has 1 images directly inside)" in str(e.value)
    assert "/<class>/<image>" in str(e.value)


def test_imagefolder_all_images_broken_in_a_class(tmp_path):
    root = tmp_path / "flat"
    save_image(root / "a" / "0.png", "RGB")
    truncated_jpeg(root / "b" / "0.jpg")
    with pytest.raises(DataError, match=r"class folder '.*b' has no readable images"):
        load_imagefolder(str(root), image_size=8)


def test_imagefolder_pixels_survive_the_thread_pool(tmp_path):
    # Square images at the stored size are neither resized nor cropped: pixels must come back
    # exactly, each in its own row (over 16 files, so decoding goes through the thread pool).
    rng = np.random.default_rng(0)
    originals = set()
    for c in ("a", "b"):
        for i in range(10):
            a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            path = tmp_path / c / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            if i % 2:  # grey ones must come back as three equal channels
                a[..., 1] = a[..., 2] = a[..., 0]
                Image.fromarray(a[..., 0], "L").save(path)
            else:
                Image.fromarray(a, "RGB").save(path)
            originals.add(a.transpose(2, 0, 1).tobytes())
    splits = load_imagefolder(str(tmp_path), image_size=8, val_fraction=0.0, test_fraction=0.5)
    loaded = {img.numpy().tobytes() for img in torch.cat([splits.train.images, splits.test.images])}
    assert loaded == originals


# --- ImageFolder: links, duplicates and other trees that are not what they look like ----------


def square_images(folder: Path, n: int, tag: str) -> dict[bytes, str]:
    """n distinct 8x8 RGB PNGs in folder; {their pixels as loaded at image_size=8: tag}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(str(folder).encode()))
    out = {}
    for i in range(n):
        a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(a, "RGB").save(folder / f"{i}.png")
        out[a.transpose(2, 0, 1).tobytes()] = tag
    return out


def loaded(arrays: ImageArrays) -> list[tuple[bytes, str]]:
    return [(img.numpy().tobytes(), arrays.classes[int(y)]) for img, y in zip(arrays.images, arrays.labels)]


def all_loaded(splits) -> list[tuple[bytes, str]]:
    return [x for s in (splits.train, splits.val, splits.test) if s is not None for x in loaded(s)]


def one_line_error(**kwargs) -> str:
    with pytest.raises(DataError) as e:
        load_imagefolder(image_size=8, **kwargs)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1, msg
    return msg


def log_text(caplog) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def test_imagefolder_symlink_loop_is_not_followed(tmp_path, caplog):
    # root/a/loop -> .. once turned 20 images into 820: b's images labelled a, train and test sharing.
    root = tmp_path / "flat"
    truth = {**square_images(root / "a", 10, "a"), **square_images(root / "b", 10, "b")}
    (root / "a" / "loop").symlink_to("..")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.2, seed=0)
    got = all_loaded(splits)
    assert len(got) == 20 and sorted(got) == sorted(truth.items())
    assert not {p for p, _ in loaded(splits.train)} & {p for p, _ in loaded(splits.test)}
    assert "skipped 1 link that loops back to a folder above it" in log_text(caplog) and "a/loop -> .." in log_text(caplog)


@pytest.mark.parametrize("link, target", [("a/self", "."), ("b/deep/up", "../.."), ("b/deep/class", "..")])
def test_imagefolder_links_to_their_own_folder_or_above_are_not_followed(tmp_path, caplog, link, target):
    # One loop per tree: the old walk, which followed them, ends (with far too many images) rather than hangs.
    root = tmp_path / "flat"
    truth = {**square_images(root / "a", 3, "a"), **square_images(root / "b", 3, "b")}
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(target)
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.5)
    assert sorted(all_loaded(splits)) == sorted(truth.items())
    assert "skipped 1 link that loops back" in log_text(caplog) and f"{link} -> {target}" in log_text(caplog)


def test_imagefolder_link_cycle_between_classes_ends(tmp_path):
    # a/x -> b and b/y -> a is no ancestor of either, but walking it must still end; then the same
    # images are in both classes, which is an error.
    root = tmp_path / "flat"
    square_images(root / "a", 3, "a")
    square_images(root / "b", 3, "b")
    (root / "a" / "x").symlink_to("../b")
    (root / "b" / "y").symlink_to("../a")
    msg = one_line_error(root=str(root))
    assert "the same image is in two classes" in msg


def test_imagefolder_links_inside_the_root_are_followed_once(tmp_path, caplog):
    root = tmp_path / "flat"
    truth = {**square_images(root / "a", 2, "a"), **square_images(root / "b", 4, "b")}
    truth.update(square_images(root / ".store" / "more_a", 3, "a"))
    (root / "a" / "more").symlink_to("../.store/more_a")  # a folder elsewhere inside the root
    (root / "a" / "again").symlink_to("more")  # the same folder by a second path
    (root / "a" / "same.png").symlink_to("0.png")  # the same file by a second path
    with caplog.at_level(logging.INFO, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.3)
    assert sorted(all_loaded(splits)) == sorted(truth.items())
    assert "reached by two paths" in log_text(caplog)


def test_imagefolder_links_out_of_the_root_and_broken_links_are_skipped_and_counted(tmp_path, caplog):
    root = tmp_path / "flat"
    truth = {**square_images(root / "a", 3, "a"), **square_images(root / "b", 3, "b")}
    square_images(tmp_path / "elsewhere", 2, "x")
    (root / "a" / "ext").symlink_to(tmp_path / "elsewhere")
    (root / "b" / "ext.png").symlink_to(tmp_path / "elsewhere" / "0.png")
    (root / "b" / "dead.png").symlink_to(tmp_path / "gone.png")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.3)
    assert sorted(all_loaded(splits)) == sorted(truth.items())
    text = log_text(caplog)
    assert "skipped 2 links that point outside" in text and "a/ext" in text and "b/ext.png" in text
    assert "skipped 1 broken link" in text and "b/dead.png" in text
    assert "unreadable" not in text


def test_imagefolder_class_folder_links_follow_the_same_rules(tmp_path, caplog):
    root = tmp_path / "flat"
    square_images(root / "a", 2, "a")
    square_images(root / "b", 2, "b")
    square_images(tmp_path / "outside" / "c", 2, "c")
    (root / "c").symlink_to(tmp_path / "outside" / "c")
    (root / "loop").symlink_to(".")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.5)
    assert splits.train.classes == ["a", "b"]
    text = log_text(caplog)
    assert "skipped 1 link that points outside" in text and "c -> " in text and "skipped 1 link that loops back" in text


def test_imagefolder_same_image_in_two_classes_names_both(tmp_path):
    root = tmp_path / "flat"
    square_images(root / "a", 3, "a")
    square_images(root / "b", 3, "b")
    (root / "b" / "copy.png").write_bytes((root / "a" / "1.png").read_bytes())
    msg = one_line_error(root=str(root))
    assert "the same image is in two classes" in msg
    assert str(root / "a" / "1.png") in msg and str(root / "b" / "copy.png") in msg
    assert "delete it from the class it does not belong to" in msg


def test_imagefolder_link_to_an_image_of_another_class_is_that_image_twice(tmp_path):
    root = tmp_path / "flat"
    square_images(root / "a", 3, "a")
    square_images(root / "b", 3, "b")
    (root / "b" / "borrowed.png").symlink_to("../a/2.png")
    msg = one_line_error(root=str(root))
    assert "two classes" in msg and str(root / "a" / "2.png") in msg and str(root / "b" / "borrowed.png") in msg


def test_imagefolder_same_image_in_train_and_test_folders(tmp_path, caplog):
    root = tmp_path / "splits"
    square_images(root / "train" / "a", 3, "a")
    square_images(root / "train" / "b", 3, "b")
    square_images(root / "test" / "a", 2, "a")
    (root / "test" / "b").mkdir()
    for i in range(2):
        (root / "test" / "b" / f"leak{i}.png").write_bytes((root / "train" / "b" / f"{i}.png").read_bytes())
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        msg = one_line_error(root=str(root))
    assert "the same image is in train and test" in msg and "and 1 more" in msg
    assert str(root / "train" / "b" / "0.png") in msg and str(root / "test" / "b" / "leak0.png") in msg
    assert "delete one of the copies" in msg
    assert "leak1.png" in log_text(caplog)  # every pair is listed, not only the first


def test_imagefolder_exact_copies_in_one_class_count_once_and_never_straddle_splits(tmp_path, caplog):
    root = tmp_path / "flat"
    truth = {**square_images(root / "a", 5, "a"), **square_images(root / "b", 5, "b")}
    for i in range(5):
        data = (root / "a" / f"{i}.png").read_bytes()
        (root / "a" / f"{i} copy.png").write_bytes(data)
        (root / "a" / f"{i}.PNG").write_bytes(data)  # the same name with an upper-case extension
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.2, test_fraction=0.2, seed=0)
    got = all_loaded(splits)
    assert len(got) == 10 and sorted(got) == sorted(truth.items())
    seen = [set(p for p, _ in loaded(s)) for s in (splits.train, splits.val, splits.test)]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    text = log_text(caplog)
    assert "dropped 10 exact copies" in text and "a/0 copy.png (same bytes as a/0.PNG)" in text


def test_imagefolder_one_class_is_an_error(tmp_path):
    root = tmp_path / "flat"
    square_images(root / "only", 4, "only")
    msg = one_line_error(root=str(root))
    assert f"'{root}' has 1 class folder (only)" in msg and "a classifier needs at least 2 classes" in msg
    assert "add another class folder" in msg

    split_root = tmp_path / "splits"
    square_images(split_root / "train" / "only", 4, "only")
    msg = one_line_error(root=str(split_root))
    assert f"'{split_root / 'train'}' has 1 class folder" in msg


def test_imagefolder_one_class_that_holds_the_classes_says_so(tmp_path):
    root = tmp_path / "download"
    square_images(root / "images" / "a", 2, "a")
    square_images(root / "images" / "b", 2, "b")
    msg = one_line_error(root=str(root))
    assert f"data.source_args.root={root / 'images'}" in msg


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory):
    """A valid 20000x20000 image (400M pixels): 1-bit, so it is small on disk."""
    path = tmp_path_factory.mktemp("huge") / "huge.png"
    Image.new("1", (20000, 20000)).save(path)
    return path


def tree_with(root: Path, extra: Path) -> Path:
    square_images(root / "a", 3, "a")
    square_images(root / "b", 3, "b")
    (root / "a" / extra.name).write_bytes(extra.read_bytes())
    return root


def test_imagefolder_decompression_bomb_names_the_limit_and_the_setting(tmp_path, huge_png, caplog):
    root = tree_with(tmp_path / "flat", huge_png)
    limit = 2 * Image.MAX_IMAGE_PIXELS
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.5)
    assert len(all_loaded(splits)) == 6
    text = log_text(caplog)
    assert f"over PIL's decompression-bomb limit of {limit} pixels" in text and "huge.png (20000x20000" in text
    assert "data.source_args.max_image_pixels" in text and "unreadable" not in text

    msg = one_line_error(root=str(root), strict=True)
    assert f"over PIL's decompression-bomb limit of {limit} pixels" in msg and "a/huge.png" in msg
    assert "data.source_args.max_image_pixels=" in msg and "null" in msg


def test_imagefolder_max_image_pixels_is_applied_while_decoding(tmp_path, monkeypatch, caplog):
    root = tmp_path / "flat"
    square_images(root / "a", 2, "a")
    square_images(root / "b", 2, "b")
    save_image(root / "a" / "wide.png", "RGB", size=(24, 16))  # 384 pixels
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.5, max_image_pixels=300)
    assert len(all_loaded(splits)) == 4
    assert "over data.source_args.max_image_pixels=300" in log_text(caplog) and "wide.png (24x16" in log_text(caplog)
    assert len(all_loaded(load_imagefolder(str(root), image_size=8, test_fraction=0.5, max_image_pixels=384))) == 5

    # PIL's own check is lifted while decoding, and put back after.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert len(all_loaded(load_imagefolder(str(root), image_size=8, test_fraction=0.5, max_image_pixels=None))) == 5
    assert Image.MAX_IMAGE_PIXELS == 100
    assert len(all_loaded(load_imagefolder(str(root), image_size=8, test_fraction=0.5, max_image_pixels=1000))) == 5


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "many"])
def test_imagefolder_max_image_pixels_must_be_a_count(tmp_path, bad):
    root = tmp_path / "flat"
    square_images(root / "a", 2, "a")
    square_images(root / "b", 2, "b")
    msg = one_line_error(root=str(root), max_image_pixels=bad)
    assert f"data.source_args.max_image_pixels={bad!r}" in msg and "null for no limit" in msg


def test_imagefolder_config_default_is_pils_limit():
    import yaml

    config = yaml.safe_load((Path(__file__).parents[1] / "configs" / "data" / "imagefolder.yaml").read_text())
    assert config["source_args"]["max_image_pixels"] == 2 * Image.MAX_IMAGE_PIXELS


def test_imagefolder_fifo_and_macos_leftovers_are_not_data(tmp_path, caplog):
    # A FIFO named like an image would block the loader forever; __MACOSX holds only ._ files.
    root = tmp_path / "flat"
    truth = {**square_images(root / "a", 2, "a"), **square_images(root / "b", 2, "b")}
    os.mkfifo(root / "a" / "pipe.png")
    (root / "__MACOSX" / "a").mkdir(parents=True)
    (root / "__MACOSX" / "a" / "._0.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        splits = load_imagefolder(str(root), image_size=8, val_fraction=0.0, test_fraction=0.5)
    assert splits.train.classes == ["a", "b"] and sorted(all_loaded(splits)) == sorted(truth.items())
    assert "skipped 1 entry that is not a regular file" in log_text(caplog) and "a/pipe.png" in log_text(caplog)


def test_imagefolder_strict_error_is_one_line(tmp_path):
    root = tmp_path / "flat"
    flat_tree(root, per_class=2)
    msg = one_line_error(root=str(root), strict=True)
    assert "broken.jpg" in msg and "strict=false" in msg


def test_imagefolder_class_of_skipped_links_only_says_so(tmp_path, caplog):
    root = tmp_path / "flat"
    square_images(root / "a", 2, "a")
    square_images(tmp_path / "elsewhere", 2, "x")
    (root / "b").mkdir()
    for i in range(2):
        (root / "b" / f"{i}.png").symlink_to(tmp_path / "elsewhere" / f"{i}.png")
    with caplog.at_level(logging.WARNING, logger="transferlab.data.sources"):
        msg = one_line_error(root=str(root))
    assert f"class folder '{root / 'b'}' has no images" in msg and "2 entries in it were skipped" in msg
    assert "copy what they point to into the root (cp -rL)" in log_text(caplog)
