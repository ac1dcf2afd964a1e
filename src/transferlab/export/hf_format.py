"""Hugging Face folders (`save_pretrained` + tokenizer) are for text encoders; an image run is refused
here with the formats that fit it, until a text backbone exists to export."""

from __future__ import annotations

from pathlib import Path

from transferlab.export.formats import FormatOutput, register_format
from transferlab.export.verify import ExportError


@register_format("hf")
def export_hf(trained, network, out_dir: Path, samples) -> FormatOutput:
    raise ExportError(
        f"--format hf writes a transformers text classifier, and this run's backbone is {trained.modality} "
        f"({trained.config.model.name}, timm): use --format timm, onnx or torchscript"
    )
