"""`python eval.py ckpt_path=...`: rebuild the run stored in a checkpoint and evaluate it."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from transferlab import CONFIG_DIR
from transferlab.errors import CheckpointError, TransferlabError, exit_with
from transferlab.pipeline import make_run
from transferlab.utils.io import atomic_write_json
from transferlab.utils.resolvers import register as register_resolvers

log = logging.getLogger("transferlab.eval")


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}: pass ckpt_path=<run dir>/checkpoints/<file>.ckpt")
    try:
        # Our own checkpoints hold the run's config (plain containers) next to the tensors.
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path} ({type(e).__name__}: {e}): is the file complete?") from e
    if "transferlab" not in ckpt or "state_dict" not in ckpt:
        raise CheckpointError(f"{path} is not a transferlab checkpoint (no stored run config): evaluate checkpoints written by train.py")
    return ckpt


def evaluate(cfg: DictConfig) -> dict:
    ckpt = load_checkpoint(cfg.ckpt_path)
    run_cfg = OmegaConf.create(ckpt["transferlab"]["config"])
    with open_dict(run_cfg):
        run_cfg.paths = cfg.paths
        run_cfg.trainer = cfg.trainer
        run_cfg.data = OmegaConf.merge(run_cfg.data, cfg.get("data_overrides") or {})
    run = make_run(run_cfg, weights="none")  # every tensor comes from the checkpoint
    stored_classes = ckpt["transferlab"].get("num_classes")
    if stored_classes != run.datamodule.num_classes:
        raise CheckpointError(
            f"checkpoint has a {stored_classes}-class head but the data has {run.datamodule.num_classes} classes: "
            "evaluate on the data it was trained on"
        )
    run.module.load_state_dict(ckpt["state_dict"])
    trainer = hydra.utils.instantiate(cfg.trainer, logger=False, callbacks=[])
    split = str(cfg.split)
    if split not in ("test", "val"):
        raise CheckpointError(f"split={split!r}: use test or val")
    loop = trainer.test if split == "test" else trainer.validate
    results = loop(run.module, datamodule=run.datamodule, verbose=False)
    metrics = {k.split("/", 1)[1]: float(v) for k, v in results[0].items() if k.startswith(f"{split}/")}
    out = {"checkpoint": str(Path(cfg.ckpt_path).resolve()), "split": split, "metrics": metrics}
    atomic_write_json(Path(cfg.paths.output_dir) / "eval_metrics.json", out)
    return out


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    try:
        out = evaluate(cfg)
    except TransferlabError as e:
        exit_with(e)
    m = out["metrics"]
    print(f"\n{out['split']} accuracy {m.get('acc', float('nan')):.4f} (top-5 {m.get('acc_top5', float('nan')):.4f}) for {out['checkpoint']}", flush=True)
    return m.get("acc")


if __name__ == "__main__":
    main()
