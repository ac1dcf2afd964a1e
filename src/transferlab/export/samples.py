"""Real inputs to check an export on: images the user names (--inputs), else the run's own test
split rebuilt from its config; random images only where neither is at hand, and the report says so."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from transferlab.data.images.transforms import BatchPreprocess
from transferlab.errors import TransferlabError

log = logging.getLogger(__name__)

COUNT = 8


@dataclass
class Samples:
    images: torch.Tensor  # normalised float [N, C, H, W], as the model takes them
    source: str  # what they are, for the report


def _from_files(trained, inputs: str) -> Samples:
    from transferlab.data.images.decode import PIL_PIXEL_LIMIT, decode_files
    from transferlab.inference.inputs import collect_inputs

    files = [f for f in collect_inputs(inputs, trained.modality) if f.problem is None][: COUNT * 4]
    decoded = decode_files([f.path for f in files], trained.storage_size, PIL_PIXEL_LIMIT)
    ok = torch.from_numpy(decoded.images[decoded.ok][:COUNT])
    if len(ok) < 2:
        raise TransferlabError(f"--inputs {inputs} has {len(ok)} readable images; the export check needs 2 or more")
    return Samples(BatchPreprocess(**trained.preprocess)(ok), f"{len(ok)} images from {inputs}")


def _from_test_split(trained) -> Samples:
    from transferlab.engine.builders import make_datamodule

    datamodule = make_datamodule(trained.config, trained.module.encoder)
    datamodule.setup()
    images = datamodule.splits["test"].images[:COUNT]
    return Samples(BatchPreprocess(**trained.preprocess)(images), f"{len(images)} images of the run's test split")


def export_samples(trained, inputs: str | None) -> Samples:
    if inputs:
        return _from_files(trained, inputs)
    try:
        return _from_test_split(trained)
    except (TransferlabError, OSError) as e:
        log.warning("the run's data is not readable here (%s): checking the export on random images; pass --inputs "
                    "<images> to check it on real ones", str(e).splitlines()[0][:160])
    spec = trained.preprocess
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (COUNT, 3, trained.storage_size, trained.storage_size), dtype=torch.uint8, generator=g)
    return Samples(BatchPreprocess(**spec)(images), f"{COUNT} random images (the run's data was not readable)")
