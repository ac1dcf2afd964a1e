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
from transferlab.export.formats import ExportFormat, get_format
from transferlab.export.samples import export_samples
from transferlab.export.verify import ExportError
from transferlab.inference.sidecar import SIDECAR, sidecar_payload
from transferlab.inference.trained import load_trained
from transferlab.models.backbone import backbone_kind, kind_name, kinds
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


def _one_of(names: tuple[str, ...]) -> str:
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_fits(export_format: ExportFormat, trained) -> None:
    """Refuse a format the run's backbone kind does not write, naming those it does."""
    kind = backbone_kind(kind_name(trained.config.model))
    name = trained.config.model.name
    if not kind.export_formats:
        exportable = sorted({k.modality for k in kinds() if k.export_formats})
        raise ConfigError(f"transferlab export handles {' and '.join(exportable)} runs; this is a {trained.modality} run "
                          f"({name}), whose export is not built yet: evaluate it with python eval.py ckpt_path=<checkpoint>")
    if export_format.name not in kind.export_formats:
        raise ExportError(f"--format {export_format.name} writes {export_format.writes}, and this run's backbone is "
                          f"{trained.modality} ({name}, {kind.name}): use --format {_one_of(kind.export_formats)}")


def export_run(ref: str, fmt: str, out: str | Path, inputs: str | None = None, log_dir: str | Path = "logs",
               overwrite: bool = False) -> ExportResult:
    export_format = get_format(fmt)  # an unknown format fails before anything loads
    out = Path(out).expanduser()
    _check_out(out, overwrite)
    trained = load_trained(ref, log_dir)
    check_fits(export_format, trained)
    network = trained.network()
    samples = export_samples(trained, inputs)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed into place: a failed check leaves no half an export.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        output = export_format.write(trained, network, staging, samples)
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
