"""`python eval.py ckpt_path=...`: rebuild the run stored in a checkpoint and evaluate it."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab import CONFIG_DIR
from transferlab.engine.assemble import make_run
from transferlab.engine.calibration import stored_temperature
from transferlab.engine.trainer import instantiate_trainer
from transferlab.engine.policy import run_guarded
from transferlab.errors import ConfigError, cli
from transferlab.models.checkpoint import check_fits, read_checkpoint
from transferlab.utils.io import atomic_write_json
from transferlab.utils.resolvers import register as register_resolvers

log = logging.getLogger("transferlab.eval")


def evaluate(cfg: DictConfig) -> dict:
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise ConfigError(f"split={split!r} is not a split eval.py runs: use split=test or split=val")
    if cfg.get("model_path"):
        return _write(cfg, str(Path(cfg.model_path).resolve()), split, evaluate_exported(cfg, split))
    if not cfg.get("ckpt_path"):
        raise ConfigError("pass ckpt_path=<run dir>/checkpoints/<file>.ckpt, or model_path=<exported model.onnx>")
    ckpt = read_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(ckpt["transferlab"]["config"])
    with open_dict(run_cfg):
        run_cfg.paths = cfg.paths
        # The stored schedule's length: the plan is rebuilt as it trained, whatever eval's trainer says.
        run_cfg.trainer = OmegaConf.merge(cfg.trainer, {"max_epochs": run_cfg.trainer.get("max_epochs")})
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.get("data_overrides") or {})
        if "init_from" in run_cfg.model:
            run_cfg.model.init_from = None  # every tensor comes from this checkpoint
    run = make_run(run_cfg, weights="none")
    check_fits(
        ckpt, cfg.ckpt_path, run.module.state_dict(), run.datamodule.num_classes, run.datamodule.classes,
        fix="evaluate it on the data it was trained on (drop data_overrides that change the classes)",
        model_name=str(run_cfg.model.name),
    )
    run.module.load_state_dict(ckpt["state_dict"])
    # calibrated.ckpt's temperature divides the scored logits: ECE, NLL and Brier are the calibrated ones.
    run.module.temperature = stored_temperature(ckpt)
    trainer = instantiate_trainer(cfg, logger=False, callbacks=[])
    loop = trainer.test if split == "test" else trainer.validate
    results = loop(run.module, datamodule=run.datamodule, verbose=False)
    metrics = {k.split("/", 1)[1]: float(v) for k, v in results[0].items() if k.startswith(f"{split}/")}
    return _write(cfg, str(Path(cfg.ckpt_path).resolve()), split, metrics, run.module.temperature)


def _write(cfg: DictConfig, model: str, split: str, metrics: dict, temperature: float | None = None) -> dict:
    out = {"checkpoint": model, "split": split, "metrics": metrics}
    if temperature:
        out["temperature"] = temperature
    atomic_write_json(Path(cfg.paths.output_dir) / "eval_metrics.json", out)
    return out


def evaluate_exported(cfg: DictConfig, split: str) -> dict:
    """An exported ONNX model on its run's split, rebuilt from the config in its sidecar: the
    metrics the module logs, from the same torchmetrics definitions."""
    import numpy as np
    import torch
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    from transferlab.data.images.transforms import BatchPreprocess
    from transferlab.engine.builders import datamodule_for
    from transferlab.inference.models import open_model
    from transferlab.utils.probabilities import probability_scores

    model = open_model(cfg.get("ckpt_path"), cfg.model_path, cfg.paths.log_dir)  # refuses both at once
    run_cfg = model.config
    with open_dict(run_cfg):
        run_cfg.paths = cfg.paths
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.get("data_overrides") or {})
    transform = BatchPreprocess(**model.preprocess)
    datamodule = datamodule_for(run_cfg, transform, model.storage_size)
    datamodule.setup()
    if list(datamodule.classes) != list(model.classes):
        raise ConfigError(f"{cfg.model_path} classifies {len(model.classes)} classes that are not this data's "
                          f"{len(datamodule.classes)}: evaluate it on the data it was trained on (drop data_overrides)")
    loader = datamodule.test_dataloader() if split == "test" else datamodule.val_dataloader()
    batches = [(model.scorer(transform.apply(b, train=False).images), b.labels) for b in loader]
    logits = torch.from_numpy(np.concatenate([np.asarray(z) for z, _ in batches]))
    y = torch.cat([labels for _, labels in batches])
    k = len(model.classes)
    return {
        "acc": float(multiclass_accuracy(logits, y, num_classes=k, average="micro")),
        "acc_top5": float(multiclass_accuracy(logits, y, num_classes=k, top_k=min(5, k), average="micro")),
        "f1_macro": float(multiclass_f1_score(logits, y, num_classes=k, average="macro")),
        "loss": float(torch.nn.functional.cross_entropy(logits, y)),
        **probability_scores(logits, y),
    }


register_resolvers()


def main(cfg: DictConfig | None = None) -> float | None:
    """`python eval.py ckpt_path=...`; given a config, the task function itself (Hydra's passthrough)."""
    return _task(cfg) if cfg is not None else cli(_task)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def _task(cfg: DictConfig) -> float | None:
    out = run_guarded(cfg, evaluate, record_failure=lambda error, status: None)  # eval writes no run record
    if out is None:
        return None
    m = out["metrics"]
    print(f"\n{out['split']} accuracy {m.get('acc', float('nan')):.4f} (top-5 {m.get('acc_top5', float('nan')):.4f}) for {out['checkpoint']}", flush=True)
    return m.get("acc")


if __name__ == "__main__":
    main()
