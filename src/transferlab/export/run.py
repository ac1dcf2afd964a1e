"""Export a finished run: load it, build the plain network, write one format and its sidecar and
card into a fresh folder, all or nothing."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from transferlab.errors import ConfigError
from transferlab.export.card import model_card
from transferlab.export.formats import get_format
from transferlab.export.samples import export_samples
from transferlab.inference.sidecar import SIDECAR, sidecar_payload
from transferlab.inference.trained import load_trained
from transferlab.utils.io import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    out_dir: Path
    files: dict[str, str]
    verification: dict


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: pass a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} is not empty: pass a new folder, or --overwrite to replace it")


def export_run(ref: str, fmt: str, out: str | Path, inputs: str | None = None, log_dir: str | Path = "logs",
               overwrite: bool = False) -> ExportResult:
    write = get_format(fmt)  # an unknown format fails before anything loads
    out = Path(out).expanduser()
    _check_out(out, overwrite)
    trained = load_trained(ref, log_dir)
    if trained.modality != "image":
        raise ConfigError(f"transferlab export handles image runs; this is a {trained.modality} run "
                          f"({trained.config.model.name}), whose export (ONNX with a tokenizer, a HF folder) is not built "
                          "yet: evaluate it with python eval.py ckpt_path=<checkpoint>")
    network = trained.network()
    samples = export_samples(trained, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: a failed check leaves no half an export.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        output = write(trained, network, staging, samples)
        files = {**output.files, "sidecar": SIDECAR, "card": "README.md"}
        payload = sidecar_payload(trained, fmt, files, output.verification)
        atomic_write_json(staging / SIDECAR, payload)
        atomic_write_bytes(staging / "README.md", model_card(trained, payload, output).encode())
        os.chmod(staging, 0o777 & ~_umask())
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("exported %s as %s to %s", trained.checkpoint, fmt, out)
    return ExportResult(out, files, output.verification)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
