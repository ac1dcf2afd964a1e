"""Post-hoc calibration of the tested checkpoint: `eval.calibrate=temperature`.

After the test, the tested weights score the validation split once more; one temperature is fitted
on those logits alone (finetune/temperature.py), so the test split never informs it. The test
logits are the ones the test scored, kept by the module while it ran. The record's `calibration`
entry holds the temperature and ECE, NLL and Brier on both splits before and after it, and
`checkpoints/calibrated.ckpt` holds the tested weights with the temperature beside them, which
eval.py, predict.py and export apply (inference/trained.py). Accuracy cannot move: dividing logits
by a positive number keeps their argmax.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from transferlab.engine.module import TransferModule
from transferlab.finetune.temperature import T_BOUNDS, fit_temperature
from transferlab.utils.probabilities import probability_scores

log = logging.getLogger(__name__)

NONE, TEMPERATURE = "none", "temperature"
CHECKPOINT_FILE = "calibrated.ckpt"
# The key of checkpoint["transferlab"] that carries the fitted temperature.
TEMPERATURE_KEY = "temperature"


def calibration_method(cfg: DictConfig) -> str:
    """eval.calibrate, `none` for a config written before the key existed."""
    node = cfg.get("eval") or {}
    return str(node.get("calibrate") or NONE)


def wants_temperature(cfg: DictConfig) -> bool:
    return calibration_method(cfg) == TEMPERATURE and bool(cfg.get("test", True))


def _kept(module: TransferModule, stage: str) -> tuple[torch.Tensor, torch.Tensor] | None:
    pieces = module.kept.get(stage) or []
    if not pieces:
        return None
    return torch.cat([z for z, _ in pieces]), torch.cat([y for _, y in pieces])


def _scores(logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    return {"acc": float((logits.argmax(-1) == labels).double().mean()), **probability_scores(logits, labels)}


def calibrate_tested(cfg: DictConfig, module: TransferModule, trainer: pl.Trainer, datamodule) -> dict:
    """Fit the temperature on validation, save calibrated.ckpt, and return the record's entry.
    The module kept the test's logits (keep_logits was set before the test)."""
    entry: dict = {"method": TEMPERATURE, "fitted_on": "val", "bounds": list(T_BOUNDS)}
    if trainer.world_size > 1:
        # The kept logits are each process's share; one temperature needs the whole split.
        module.keep_logits = False
        log.warning("eval.calibrate=temperature needs one process; this run had %d: no temperature was fitted",
                    trainer.world_size)
        return {**entry, "skipped": f"{trainer.world_size} processes: fit it with one (trainer.devices=1)"}
    trainer.validate(module, datamodule=datamodule, verbose=False)
    module.keep_logits = False
    test, val = _kept(module, "test"), _kept(module, "val")
    module.kept.clear()
    if test is None or val is None:
        return {**entry, "skipped": "no validation or test batch was scored"}
    temperature = fit_temperature(*val, bounds=T_BOUNDS)
    if min(abs(temperature - b) / b for b in T_BOUNDS) < 1e-6:
        log.warning("the fitted temperature %.4g is at its bound %s: validation does not pin it down "
                    "(a head that separates validation perfectly wants T -> 0)", temperature, T_BOUNDS)
    for name, (logits, labels) in (("val", val), ("test", test)):
        entry[name] = {"before": _scores(logits, labels), "after": _scores(logits / temperature, labels)}
    entry[TEMPERATURE_KEY] = temperature
    entry["checkpoint"] = save_calibrated(cfg, module, trainer, temperature)
    log.info("temperature %.4f fitted on validation: test ECE %.4f -> %.4f, NLL %.4f -> %.4f", temperature,
             entry["test"]["before"]["ece"], entry["test"]["after"]["ece"],
             entry["test"]["before"]["nll"], entry["test"]["after"]["nll"])
    return entry


def save_calibrated(cfg: DictConfig, module: TransferModule, trainer: pl.Trainer, temperature: float) -> str:
    """checkpoints/calibrated.ckpt: the weights the test scored, and the temperature."""
    path = Path(cfg.paths.output_dir) / "checkpoints" / CHECKPOINT_FILE
    module.extra_checkpoint_state[TEMPERATURE_KEY] = temperature
    try:
        trainer.save_checkpoint(str(path))
    finally:
        module.extra_checkpoint_state.pop(TEMPERATURE_KEY, None)
    return str(path)


def stored_temperature(checkpoint: dict) -> float | None:
    """The temperature a checkpoint carries (calibrated.ckpt), or None."""
    value = (checkpoint.get("transferlab") or {}).get(TEMPERATURE_KEY)
    return float(value) if value else None
