"""TorchScript (torch.jit.trace) for users who have torch but not onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from transferlab.export.formats import FormatOutput, register_format
from transferlab.export.verify import ExportError, compare
from transferlab.inference.scoring import torch_scorer

FILE = "model.pt"
TRACED_BATCH = 2


@register_format("torchscript", writes="a TorchScript module")
def export_torchscript(trained, network, out_dir: Path, samples) -> FormatOutput:
    path = out_dir / FILE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch marks jit as deprecated in favour of torch.export
        try:
            traced = torch.jit.trace(network, samples.images[:TRACED_BATCH].clone(), check_trace=False)
            traced.save(str(path))
            loaded = torch.jit.load(str(path))
        except Exception as e:
            raise ExportError(f"torch.jit.trace failed for {trained.config.model.name} ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:200] if str(e) else ''}): use --format onnx") from e

    @torch.inference_mode()
    def score(x: torch.Tensor) -> np.ndarray:
        return loaded(x).float().numpy()

    report = compare(torch_scorer(network), score, samples.images, TRACED_BATCH, "TorchScript", samples.source)
    usage = (f"`model = torch.jit.load('{FILE}').eval()`; `model(images)` takes normalised float images "
             "[B, C, H, W] (see `transferlab.json`) and returns logits in the order of its `classes`.")
    notes = ["The mirror average of test time is inside the traced graph."] if trained.tta_hflip else []
    return FormatOutput({"model": FILE}, report, usage, notes)
