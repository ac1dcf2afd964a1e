"""`python predict.py ckpt_path=... inputs=...`: a trained model's predictions on files, as a CSV."""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from transferlab import CONFIG_DIR
from transferlab.data.images.decode import PIL_PIXEL_LIMIT
from transferlab.engine.policy import run_guarded
from transferlab.config.checks import Rule
from transferlab.errors import cli
from transferlab.inference.inputs import collect_inputs
from transferlab.inference.models import open_model
from transferlab.inference.scoring import predict_files
from transferlab.utils.io import atomic_write_bytes, atomic_write_json
from transferlab.utils.resolvers import register as register_resolvers

log = logging.getLogger("transferlab.predict")


def _pixel_limit(cfg: DictConfig, run_config: DictConfig) -> int | None:
    if cfg.get("max_image_pixels") is not None:
        return int(cfg.max_image_pixels)
    stored = ((run_config.get("data") or {}).get("source_args") or {}) if run_config else {}
    return int(stored["max_image_pixels"]) if stored.get("max_image_pixels") else PIL_PIXEL_LIMIT


# predict.py's own keys, checked by the rules train.py's are (config/checks.py).
RULES = {"top_k": Rule("int", low=1), "batch_size": Rule("int", low=1), "max_image_pixels": Rule("int", low=1, nullable=True)}


def predict(cfg: DictConfig) -> dict:
    for key, rule in RULES.items():
        rule.check(key, cfg.get(key))
    model = open_model(cfg.get("ckpt_path"), cfg.get("model_path"), cfg.paths.log_dir)
    files = collect_inputs(cfg.inputs, model.modality)
    log.info("predicting %d inputs with %s", len(files), model.description)
    preds = predict_files(
        files, model.scorer, model.preprocess, model.storage_size, model.classes,
        batch_size=int(cfg.batch_size), top_k=int(cfg.top_k), max_pixels=_pixel_limit(cfg, model.config),
        progress=bool(cfg.progress),
    )
    rows = preds.rows()
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    out = Path(cfg.out)
    atomic_write_bytes(out, buf.getvalue().encode())
    failed = sum(e is not None for e in preds.errors)
    summary = {
        "model": model.description, "inputs": str(cfg.inputs), "predictions": str(out), "count": len(files),
        "failed": failed, "labelled": int(preds.labelled.sum()), "accuracy": preds.accuracy(),
    }
    atomic_write_json(out.with_name(out.stem + "_summary.json"), summary)
    return summary


register_resolvers()


def main(cfg: DictConfig | None = None):
    """`python predict.py ...`; given a config, the task function itself (Hydra's passthrough)."""
    return _task(cfg) if cfg is not None else cli(_task)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="predict")
def _task(cfg: DictConfig):
    out = run_guarded(cfg, predict, record_failure=lambda error, status: None)  # predict writes no run record
    if out is None:
        return None
    acc = f", accuracy {out['accuracy']:.4f} on {out['labelled']} labelled" if out["accuracy"] is not None else ""
    bad = f", {out['failed']} could not be read (see the error column)" if out["failed"] else ""
    print(f"\n{out['count']} predictions{acc}{bad}: {out['predictions']}", flush=True)
    return out["accuracy"]


if __name__ == "__main__":
    main()
