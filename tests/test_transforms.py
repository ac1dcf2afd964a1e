"""BatchPreprocess: the per-batch path must match what timm's per-image transforms produce."""

import pytest
import timm
import torch
import torch.nn.functional as F
from PIL import Image

from transferlab.data.images.transforms import AugmentConfig, BatchPreprocess

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def smooth_images(n=4, c=3, h=60, w=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, c, 6, 6, generator=g)
    return (F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False) * 255).round().to(torch.uint8)


def test_eval_path_matches_timm_pil_transforms():
    model = timm.create_model("resnet10t", num_classes=0)
    cfg = timm.data.resolve_model_data_config(model)
    cfg["input_size"] = (3, 48, 48)
    # Bilinear: torch's antialiased kernel is PIL's (their bicubics differ: a=-0.75 vs -0.5).
    cfg["interpolation"] = "bilinear"
    pil_transform = timm.data.create_transform(**cfg, is_training=False)
    pre = BatchPreprocess(48, cfg["mean"], cfg["std"], cfg["interpolation"], cfg["crop_pct"])
    images = smooth_images(h=64, w=80)
    ours = pre(images)
    theirs = torch.stack([pil_transform(Image.fromarray(im.permute(1, 2, 0).numpy())) for im in images])
    assert ours.shape == theirs.shape == (4, 3, 48, 48)
    # PIL rounds to uint8 after resizing: equal within that rounding, in normalised units.
    assert (ours - theirs).abs().mean() < 0.01
    assert (ours - theirs).abs().max() < 0.05


def test_grey_becomes_three_channels_and_normalisation_is_exact():
    pre = BatchPreprocess(32, MEAN, STD, "bilinear", 1.0)
    white = torch.full((2, 1, 28, 28), 255, dtype=torch.uint8)
    out = pre(white)
    assert out.shape == (2, 3, 32, 32)
    expected = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    assert torch.allclose(out[0, :, 5, 5], expected, atol=1e-5)


def test_train_augmentation_is_a_seeded_random_resized_crop_with_flip():
    images = smooth_images()
    aug = BatchPreprocess(32, MEAN, STD, "bilinear", 1.0, augment=AugmentConfig(scale=(0.3, 1.0)))
    a = aug(images, train=True, generator=torch.Generator().manual_seed(1))
    b = aug(images, train=True, generator=torch.Generator().manual_seed(1))
    c = aug(images, train=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, aug(images, train=False))


def test_full_crop_with_flip_is_a_flipped_resize():
    images = smooth_images()
    aug = BatchPreprocess(30, MEAN, STD, "bilinear", 1.0, augment=AugmentConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0))
    out = aug(images, train=True)
    ref = F.interpolate(images.float() / 255, size=(30, 30), mode="bilinear", align_corners=False).flip(-1)
    ref = (ref - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(out, ref, atol=1e-4)


def test_rejects_float_input():
    with pytest.raises(TypeError, match="uint8"):
        BatchPreprocess(32, MEAN, STD)(torch.zeros(1, 3, 8, 8))


def test_epoch_batches_are_a_function_of_seed_and_epoch_and_shard_exactly():
    from transferlab.data.loaders import EpochBatches

    for size, batch, shuffle, world in [(65, 8, True, 1), (65, 8, False, 1), (67, 8, True, 2), (67, 8, False, 2), (9, 8, True, 1)]:
        ranks = [EpochBatches(size, batch, shuffle, seed=3, rank=r, world_size=world) for r in range(world)]
        for s in ranks:
            s.set_epoch(2)
        epochs = [[list(s) for s in ranks] for _ in range(2)]
        assert epochs[0] == epochs[1]  # the same epoch twice: the same batches
        for s, batches in zip(ranks, epochs[0]):
            assert len(s) == len(batches)
            assert not shuffle or all(len(b) >= 2 for b in batches)  # no training batch of one (BatchNorm)
        if shuffle and world == 1:
            ranks[0].set_epoch(3)
            assert list(ranks[0]) != epochs[0][0]  # another epoch: another order
        if world == 2:
            taken = [i for batches in epochs[0] for b in batches for i in b]
            if shuffle:  # training: the tail dropped so the ranks take the same number of steps
                per_rank = size // world - (1 if (size // world) % batch == 1 else 0)  # and a lone last image
                assert len(taken) == len(set(taken)) == per_rank * world
                assert len(epochs[0][0]) == len(epochs[0][1])
            else:  # eval: every image exactly once, so gathered metrics count each once
                assert sorted(taken) == list(range(size))


def test_lightning_moves_the_training_loader_to_each_epoch():
    """Lightning sets the epoch on a loader's `sampler` and its `batch_sampler.sampler` (not on the
    batch sampler itself): the epoch must reach the order the batches are cut from."""
    from lightning.fabric.utilities.data import _set_sampler_epoch

    from transferlab.data.loaders import batch_loader

    loader = batch_loader(torch.zeros(40, 1, 4, 4, dtype=torch.uint8), torch.arange(40), trainer=None, batch_size=8, shuffle=True, seed=1)
    orders = []
    for epoch in (0, 1, 0):
        _set_sampler_epoch(loader, epoch)
        orders.append([batch.labels.tolist() for batch in loader])
    assert orders[0] != orders[1] and orders[0] == orders[2]
    assert sorted(i for b in orders[1] for i in b) == list(range(40))
