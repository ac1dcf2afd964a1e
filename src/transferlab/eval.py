"""`python eval.py ckpt_path=...`: rebuild the run stored in a checkpoint and evaluate it."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab import CONFIG_DIR
from transferlab.engine.assemble import instantiate_trainer, make_run
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
    trainer = instantiate_trainer(cfg, logger=False, callbacks=[])
    loop = trainer.test if split == "test" else trainer.validate
    results = loop(run.module, datamodule=run.datamodule, verbose=False)
    metrics = {k.split("/", 1)[1]: float(v) for k, v in results[0].items() if k.startswith(f"{split}/")}
    out = {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "split": split, "metrics": metrics}
    atomic_write_json(Path(cfg.paths.output_dir) / "eval_metrics.json", out)
    return out


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
