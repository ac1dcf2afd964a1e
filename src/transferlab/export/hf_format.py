"""Hugging Face folders (`save_pretrained` + tokenizer) for text encoders. No backbone kind lists
this format yet (the hf kind's export is not built), so `transferlab export` refuses it before it
gets here, naming the formats that fit the run; it is registered so that the name is a known
choice with that refusal rather than argparse's."""

from __future__ import annotations

from pathlib import Path

from transferlab.export.formats import FormatOutput, register_format
from transferlab.export.verify import ExportError


@register_format("hf", writes="a transformers text classifier")
def export_hf(trained, network, out_dir: Path, samples) -> FormatOutput:
    raise ExportError("--format hf is not built yet: no backbone kind writes it")
