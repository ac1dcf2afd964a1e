"""ONNX through torch's dynamo exporter (onnxscript), batch dimension dynamic; checked in onnxruntime."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from transferlab.export.formats import FormatOutput, register_format
from transferlab.export.verify import ExportError, compare
from transferlab.inference.scoring import onnx_scorer, torch_scorer

log = logging.getLogger(__name__)

FILE = "model.onnx"
TRACED_BATCH = 2


def trace_onnx(network: torch.nn.Module, example: torch.Tensor, path: Path) -> str:
    from torch.export import Dim

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                network, (example,), str(path), input_names=["images"], output_names=["logits"],
                dynamic_shapes={"images": {0: Dim("batch", min=1)}}, dynamo=True, external_data=False, verbose=False,
            )
        return "dynamo"
    except ImportError as e:  # onnxscript missing: the TorchScript-based exporter needs only onnx
        log.warning("the dynamo ONNX exporter is unavailable (%s); using the legacy one", e)
        torch.onnx.export(
            network, (example,), str(path), input_names=["images"], output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False,
        )
        return "legacy"


@register_format("onnx", writes="an ONNX graph")
def export_onnx(trained, network, out_dir: Path, samples) -> FormatOutput:
    path = out_dir / FILE
    try:
        exporter = trace_onnx(network, samples.images[:TRACED_BATCH].clone(), path)
    except Exception as e:
        raise ExportError(f"torch.onnx.export failed for {trained.config.model.name} ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:200] if str(e) else ''}): try --format torchscript") from e
    report = compare(torch_scorer(network), onnx_scorer(path), samples.images, TRACED_BATCH, "ONNX", samples.source)
    report["exporter"] = exporter
    usage = (
        f"`python predict.py model_path={FILE} inputs=<images>` or `python eval.py model_path={FILE}`; without "
        "transferlab, onnxruntime and the preprocessing in `transferlab.json` (the README's snippet)."
    )
    notes = ["The mirror average of test time is inside the graph."] if trained.tta_hflip else []
    return FormatOutput({"model": FILE}, report, usage, notes)
