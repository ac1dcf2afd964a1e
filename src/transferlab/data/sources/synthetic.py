"""Learnable synthetic images made in memory: for tests and quick checks, no files needed."""

from __future__ import annotations

import torch

from transferlab.data.arrays import ImageArrays, Splits
from transferlab.data.sources.registry import SourceContext, register
from transferlab.errors import DataError


@register("synthetic")
def make_synthetic(
    num_classes: int = 4,
    train_per_class: int = 64,
    test_per_class: int = 32,
    image_size: int = 32,
    channels: int = 3,
    seed: int = 0,
    context: SourceContext | None = None,
) -> Splits:
    """Images a small model can learn in a few steps: per class a smooth coloured wave pattern;
    per image a random shift, contrast, brightness and pixel noise, so no two are alike."""
    if num_classes < 2 or train_per_class < 1 or test_per_class < 1 or image_size < 4 or channels not in (1, 3):
        raise DataError(
            f"synthetic data needs num_classes >= 2, train/test_per_class >= 1, image_size >= 4, channels 1 or 3; "
            f"got {num_classes}, {train_per_class}/{test_per_class}, {image_size}, {channels}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    s = image_size
    yy, xx = torch.meshgrid(torch.linspace(0, 1, s), torch.linspace(0, 1, s), indexing="ij")

    # Templates in [0, 255]: a base colour plus two plane waves of random direction and frequency.
    base = 70 + 115 * torch.rand(num_classes, channels, 1, 1, generator=gen)
    templates = base.expand(num_classes, channels, s, s).clone()
    for _ in range(2):
        angle = 2 * torch.pi * torch.rand(num_classes, 1, 1, 1, generator=gen)
        freq = 1 + 3 * torch.rand(num_classes, 1, 1, 1, generator=gen)
        phase = 2 * torch.pi * torch.rand(num_classes, channels, 1, 1, generator=gen)
        amp = 25 + 20 * torch.rand(num_classes, channels, 1, 1, generator=gen)
        wave = torch.cos(2 * torch.pi * freq * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
        templates = templates + amp * wave

    def draw(per_class: int) -> ImageArrays:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        n = len(labels)
        x = templates[labels]
        # Shifts differ per image, so pixels never line up exactly between images of a class.
        shifts = torch.randint(-2, 3, (n, 2), generator=gen)
        x = torch.stack([torch.roll(img, (int(dy), int(dx)), dims=(1, 2)) for img, (dy, dx) in zip(x, shifts)])
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        contrast = 0.75 + 0.5 * torch.rand(n, 1, 1, 1, generator=gen)
        brightness = 30 * (torch.rand(n, 1, 1, 1, generator=gen) - 0.5)
        x = (x - mean) * contrast + mean + brightness + 30 * torch.randn(x.shape, generator=gen)
        images = x.round().clamp(0, 255).to(torch.uint8).contiguous()
        return ImageArrays(images, labels.to(torch.int64), [f"class_{i}" for i in range(num_classes)])

    train = draw(train_per_class)
    test = draw(test_per_class)
    return Splits(train=train, test=test)
