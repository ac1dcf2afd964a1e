"""`transferlab.json`: what an exported model needs beside its weights to be used without transferlab.

The input's preprocessing (resize, crop, normalisation, interpolation), the class names in output
order, whether the mirror average is inside the graph, and the run it came from. predict.py and
eval.py read it to use an ONNX file as they use a checkpoint; the README's onnxruntime snippet
reads it to preprocess as training did.
"""

from __future__ import annotations

import json
from pathlib import Path

from transferlab.errors import CheckpointError

SIDECAR = "transferlab.json"
FORMAT = "transferlab-export"
VERSION = 1


def sidecar_payload(trained, fmt: str, files: dict[str, str], verification: dict | None) -> dict:
    spec = trained.preprocess
    record = trained.record
    return {
        "format": FORMAT,
        "version": VERSION,
        "export_format": fmt,
        "files": files,
        "modality": trained.modality,
        "model": str(trained.config.model.name),
        "strategy": trained.strategy,
        "classes": list(trained.classes),
        "input": {
            "name": "images",
            "layout": "NCHW",
            "dtype": "float32",
            # Resize the shorter side to resize_to, centre-crop a resize_to square, then centre-crop
            # crop_size; scale to [0, 1]; subtract mean and divide by std per channel (RGB).
            "resize_to": trained.storage_size,
            "crop_size": int(spec["image_size"]),
            "interpolation": spec["interpolation"],
            "mean": list(spec["mean"]),
            "std": list(spec["std"]),
            "in_chans": int(spec["in_chans"]),
            "crop_pct": float(spec["crop_pct"]),
        },
        # A fitted temperature is already inside the logits (the head is scaled by 1/T): it is
        # named here so a reader knows softmax(logits) is the calibrated probability.
        "output": {"name": "logits", "softmax": False, "temperature": trained.temperature},
        "tta_hflip": trained.tta_hflip,
        "verification": verification,
        "source": {
            "checkpoint": str(trained.checkpoint),
            "run_dir": str(trained.run_dir) if trained.run_dir else None,
            "test": dict(record.test) if record else {},
            "weights": record.weights_loaded if record else None,
            "commit": _commit(record),
            "overrides": list(record.overrides) if record else [],
            "data_sizes": dict(record.data_sizes) if record else {},
        },
        "run_config": trained.module.extra_checkpoint_state.get("config"),
    }


def _commit(record) -> str | None:
    code = ((record.provenance or {}).get("code") or {}) if record else {}
    if not code.get("commit"):
        return None
    return code["commit"][:12] + ("+dirty" if code.get("dirty") else "")


def read_sidecar(model_path: str | Path) -> dict:
    """The sidecar beside an exported model file, or a CheckpointError saying what is missing."""
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise CheckpointError(f"model_path={model_path}: no such file: pass the model.onnx that `transferlab export` wrote")
    side = path.parent / SIDECAR
    if not side.is_file():
        raise CheckpointError(f"{path} has no {SIDECAR} beside it: keep the export folder whole, or export again "
                              f"with `transferlab export <run> --format onnx --out {path.parent}`")
    try:
        payload = json.loads(side.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read {side} ({e}): export the run again") from e
    if payload.get("format") != FORMAT:
        raise CheckpointError(f"{side} is not a transferlab export sidecar: export the run again")
    if int(payload.get("version", 0)) > VERSION:
        raise CheckpointError(f"{side} is version {payload['version']}, newer than this transferlab reads ({VERSION}): "
                              "upgrade transferlab")
    return payload


def preprocess_of(payload: dict) -> dict:
    """The sidecar's input section as BatchPreprocess arguments."""
    i = payload["input"]
    return {"image_size": i["crop_size"], "mean": i["mean"], "std": i["std"], "interpolation": i["interpolation"],
            "crop_pct": i["crop_pct"], "in_chans": i["in_chans"]}
