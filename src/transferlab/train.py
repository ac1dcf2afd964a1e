"""`python train.py model=... data=... strategy=...`: fit, test with the best checkpoint, write metrics.json."""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from transferlab import CONFIG_DIR
from transferlab.data.feature_cache import FeatureDataModule
from transferlab.errors import TransferlabError, exit_with
from transferlab.finetune.linear_probe import ProbeResult, fit_linear_probe, load_into_head
from transferlab.models.backbone import count_params
from transferlab.pipeline import Run, fast_path_config, make_feature_datamodule, make_run, make_trainer
from transferlab.utils.io import atomic_write_json
from transferlab.utils.resolvers import register as register_resolvers
from transferlab.utils.run_stats import RunStats

log = logging.getLogger("transferlab.train")

# Frozen groups' norm layers are in eval mode on purpose (strategy.frozen_norm=eval).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _choice(group: str, default: str | None = None) -> str | None:
    try:
        return HydraConfig.get().runtime.choices.get(group, default)
    except ValueError:  # not under Hydra (tests calling train() directly)
        return default


def _metric(metrics: dict, key: str) -> float | None:
    value = metrics.get(key)
    return None if value is None else float(value)


def _summary(cfg: DictConfig, train_size: int | None) -> dict:
    return {
        "model": _choice("model", str(cfg.model.name)),
        "model_name": str(cfg.model.name),
        "weights": str(cfg.model.weights) if cfg.strategy.get("pretrained", True) else "none",
        "strategy": str(cfg.strategy.name),
        "data": _choice("data", str(cfg.data.source)),
        "samples_per_class": cfg.data.get("samples_per_class"),
        "train_fraction": cfg.data.get("train_fraction"),
        "train_size": train_size,
        "image_size": cfg.data.get("image_size"),
        "seed": int(cfg.seed),
        "max_epochs": cfg.trainer.get("max_epochs"),
        "lr": float(cfg.strategy.lr),
        "decay": float(cfg.strategy.get("decay", 1.0)),
        "unfreeze_top": cfg.strategy.get("unfreeze_top"),
    }


def _overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def output_dir(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir)


def _fit_lbfgs(cfg: DictConfig, run: Run, features: FeatureDataModule, trainer: pl.Trainer) -> tuple[ProbeResult, dict, str]:
    """strategy.solver=lbfgs: the probe on cached features into the linear head, then a checkpoint
    (checkpoints/last.ckpt, the one that is tested) and val metrics measured as the loop measures them."""
    fast = fast_path_config(cfg)
    features.setup("fit")
    probe = fit_linear_probe(
        features.features("train"), features.labels("train"), features.eval_features("val"), features.labels("val"),
        features.num_classes, grid=fast.probe_weight_decays, max_iter=fast.probe_max_iter,
    )
    load_into_head(run.module.head, probe)
    log.info("lbfgs probe: weight_decay %g chosen on val (acc %.4f) in %.1f s", probe.weight_decay, probe.val_acc, probe.fit_s)
    results = trainer.validate(run.module, datamodule=features, verbose=False)
    val = {k.split("/", 1)[1]: float(v) for k, v in (results[0] if results else {}).items() if k.startswith("val/")}
    best = output_dir(cfg) / "checkpoints" / "last.ckpt"
    trainer.save_checkpoint(best)
    return probe, val, str(best)


def train(cfg: DictConfig, run: Run | None = None) -> dict:
    """Fit and test one configuration; returns the metrics.json content.

    `run`: an already assembled run (scripts/bench.py passes one with a smaller test split).
    """
    start = time.perf_counter()
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    run = run or make_run(cfg)
    # strategy.feature_cache=true (extract): train, validate and test on cached backbone features.
    features = make_feature_datamodule(cfg, run)
    datamodule = features or run.datamodule
    stats = RunStats()
    trainer = make_trainer(cfg, [stats])
    probe = None
    if features is not None and fast_path_config(cfg).solver == "lbfgs":
        probe, val, best = _fit_lbfgs(cfg, run, features, trainer)
        stats.fit_s = probe.fit_s  # the solver, all penalties; feature extraction is time.features_s
    else:
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path == "last":
            ckpt_path = str(output_dir(cfg) / "checkpoints" / "last.ckpt")
        trainer.fit(run.module, datamodule=datamodule, ckpt_path=ckpt_path)
        val = {k.split("/", 1)[1]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if checkpoint is not None and checkpoint.best_model_score is not None:
            val["acc"] = float(checkpoint.best_model_score)  # the epoch whose weights are tested
    test, test_s = {}, 0.0
    if cfg.get("test", True):
        t0 = time.perf_counter()
        results = trainer.test(run.module, datamodule=datamodule, ckpt_path=best or None, verbose=False)
        test_s = time.perf_counter() - t0
        test = {k.split("/", 1)[1]: float(v) for k, v in (results[0] if results else {}).items() if k.startswith("test/")}
    metrics = {
        "status": "completed",
        "error": None,
        "test": test,
        "val": val,
        "params": {"total": count_params(run.module), "trainable": run.module.max_trainable_params},
        "time": {
            "fit_s": round(stats.fit_s, 2),
            "test_s": round(test_s, 2),
            "total_s": round(time.perf_counter() - start, 2),
            "train_images_per_s": round(stats.train_images_per_s or 0.0, 1),
        },
        "config": _summary(cfg, run.datamodule.split_sizes().get("train")),
        "data_sizes": run.datamodule.split_sizes(),
        "weights_loaded": run.backbone.weights,
        "best_checkpoint": best or None,
        "run_dir": str(output_dir(cfg).resolve()),
        "overrides": _overrides(),
    }
    if features is not None:
        cache = features.cache.stats
        metrics["time"]["features_s"] = round(cache.extract_s, 2)
        metrics["feature_cache"] = {
            "dir": str(features.cache.root),
            "hits": cache.hits, "built": cache.built, "rebuilt": cache.rebuilt,
            "train_augment": False,
            # Test accuracy comes from cached test features through the head; eval.py runs the same
            # checkpoint through the backbone on the test images and agrees (tests/test_feature_cache.py).
            "test_on": "cached_features",
        }
    if probe is not None:
        metrics["probe"] = probe.summary()
    if trainer.is_global_zero:
        atomic_write_json(output_dir(cfg) / "metrics.json", metrics)
    return metrics


def _report(metrics: dict) -> None:
    test, params, t = metrics["test"], metrics["params"], metrics["time"]
    c = metrics["config"]
    acc = f"{test['acc']:.4f}" if "acc" in test else "n/a"
    print(
        f"\ntest accuracy {acc}  |  {c['model']} {c['strategy']} on {c['data']} ({c['train_size']} training images)"
        f"  |  trainable {params['trainable']:,} of {params['total']:,} params  |  {t['total_s']:.0f} s"
        f"\nresults: {metrics['run_dir']}/metrics.json",
        flush=True,
    )


def _record_failure(cfg: DictConfig, error: BaseException) -> None:
    try:
        atomic_write_json(
            output_dir(cfg) / "metrics.json",
            {
                "status": "failed",
                "error": f"{type(error).__name__}: {error}",
                "test": {}, "val": {}, "params": {}, "time": {},
                "config": _summary(cfg, None),
                "run_dir": str(output_dir(cfg).resolve()),
                "overrides": _overrides(),
            },
        )
    except Exception as e:  # a read-only or full disk must not hide the original error
        log.error("could not record the failure in metrics.json: %s", e)


def _is_multirun() -> bool:
    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except Exception as e:
        _record_failure(cfg, e)
        if _is_multirun():
            # One bad job must not stop the sweep: the failure is in its metrics.json for the report.
            # None, not nan: the Optuna sweeper hands nan to study.tell, which rejects it and ends
            # the sweep; None makes it a failed trial (tests/test_sweeps.py).
            log.exception("job failed: %s", e)
            return None
        if isinstance(e, TransferlabError):
            exit_with(e)
        raise
    _report(metrics)
    # The sweep objective (Optuna) is validation accuracy: the test split never steers anything.
    return metrics["val"].get("acc")


if __name__ == "__main__":
    main()
