"""`python train.py model=... data=... strategy=...`: fit, test with the best checkpoint, write metrics.json."""

from __future__ import annotations

import json
import logging
import signal
import time
import warnings
from pathlib import Path

import hydra
import lightning.pytorch as pl
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, open_dict

from transferlab import CONFIG_DIR
from transferlab.data.feature_cache import FeatureDataModule
from transferlab.errors import TransferlabError, cli, exit_with, output_error, user_error
from transferlab.finetune.linear_probe import ProbeResult, fit_linear_probe, load_into_head
from transferlab.models.backbone import count_params
from transferlab.models.checkpoint import read_checkpoint
from transferlab.pipeline import Run, fast_path_config, make_feature_datamodule, make_run, make_trainer, maybe_compile
from transferlab.resume import ResumePoint, resume_point, resumed_config, stored_choices, stored_wandb_id
from transferlab.utils.io import atomic_write_json
from transferlab.utils.resolvers import register as register_resolvers
from transferlab.utils.run_stats import RunStats

log = logging.getLogger("transferlab.train")

# Frozen groups' norm layers are in eval mode on purpose (strategy.frozen_norm=eval).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _choices() -> dict:
    try:
        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str) and not k.startswith("hydra/")}
    except ValueError:  # not under Hydra (tests calling train() directly)
        return {}


def _summary(cfg: DictConfig, train_size: int | None, choices: dict | None = None) -> dict:
    choices = _choices() if choices is None else choices
    return {
        "model": choices.get("model", str(cfg.model.name)),
        "model_name": str(cfg.model.name),
        "weights": str(cfg.model.weights) if cfg.strategy.get("pretrained", True) else "none",
        "strategy": str(cfg.strategy.name),
        "data": choices.get("data", str(cfg.data.source)),
        "samples_per_class": cfg.data.get("samples_per_class"),
        "train_fraction": cfg.data.get("train_fraction"),
        "train_size": train_size,
        "image_size": cfg.data.get("image_size"),
        "seed": int(cfg.seed),
        "max_epochs": cfg.trainer.get("max_epochs"),
        "lr": float(cfg.strategy.lr),
        "decay": float(cfg.strategy.get("decay", 1.0)),
        "unfreeze_top": cfg.strategy.get("unfreeze_top"),
        "solver": cfg.strategy.get("solver"),  # extract: sgd (the loop) or lbfgs (the probe)
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
    overrides = _overrides()
    point = resume_point(cfg, overrides)
    if point.finished is not None:
        return _reuse_finished(cfg, point)
    choices, ckpt = _choices(), None
    if point.checkpoint is not None:
        ckpt = read_checkpoint(point.checkpoint)
        cfg = resumed_config(cfg, ckpt, point.checkpoint, overrides)
        choices = {**choices, **stored_choices(ckpt)}
        _continue_wandb_run(cfg, stored_wandb_id(ckpt))
        log.info("resuming from %s (epoch %s): model, data, strategy, optim and seed as stored there", point.checkpoint, ckpt.get("epoch"))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if run is None and ckpt is not None:
        run = _resumed_run(cfg, ckpt, point.checkpoint)
    run = run or make_run(cfg)
    run.module.extra_checkpoint_state["choices"] = choices
    maybe_compile(cfg, run.module)
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
        ckpt_path = str(point.checkpoint) if point.checkpoint is not None else None
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
        "config": _summary(cfg, run.datamodule.split_sizes().get("train"), choices),
        "data_sizes": run.datamodule.split_sizes(),
        "weights_loaded": run.backbone.weights,
        "best_checkpoint": best or None,
        "run_dir": str(output_dir(cfg).resolve()),
        "overrides": overrides,
        "resumed_from": str(point.checkpoint) if point.checkpoint is not None else None,
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
        _write_metrics(cfg, metrics)
    return metrics


def _write_metrics(cfg: DictConfig, metrics: dict) -> None:
    path = output_dir(cfg) / "metrics.json"
    try:
        atomic_write_json(path, metrics)
    except OSError as e:
        # A finished run's results outlive a full or read-only disk: on stdout, as one JSON line.
        print(json.dumps(metrics, default=str), flush=True)
        error = output_error(e, where=str(path), cache_dir=cfg.paths.get("cache_dir"))
        if error is None:
            raise
        raise type(error)(f"{error} (this run's metrics are printed above as JSON)") from e


def _resumed_run(cfg: DictConfig, ckpt: dict, path: Path) -> Run:
    """The run rebuilt around the checkpoint's tensors: no pretrained weights or model.init_from are
    fetched (they may be offline or moved by now), and the weights are in place before anything
    reads them (the feature cache keys on them)."""
    run = make_run(cfg, weights="none", init=False)
    run.module.check_checkpoint(ckpt, path)  # a clear error if the data on disk changed since
    run.module.load_state_dict(ckpt["state_dict"])
    stored = ckpt["transferlab"].get("weights")
    if stored:
        run.backbone.weights = stored
        run.module.extra_checkpoint_state["weights"] = stored
    return run


def _reuse_finished(cfg: DictConfig, point: ResumePoint) -> dict:
    """auto_resume found this job finished in an earlier sweep: its results, without training again."""
    metrics = {**point.finished, "reused_from": str(point.source_dir)}
    log.info("auto_resume: this job already completed in %s; reusing its metrics.json", point.source_dir)
    atomic_write_json(output_dir(cfg) / "metrics.json", metrics)
    return metrics


def _continue_wandb_run(cfg: DictConfig, wandb_id: str | None) -> None:
    """A resumed run logs into the W&B run it started, not a new one."""
    wandb = (cfg.get("logger") or {}).get("wandb")
    if wandb_id and wandb is not None:
        with open_dict(cfg):
            wandb.id = wandb_id
            wandb.resume = "allow"


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


def _record_failure(cfg: DictConfig, error: BaseException, status: str = "failed") -> None:
    try:
        atomic_write_json(
            output_dir(cfg) / "metrics.json",
            {
                "status": status,
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


def _user_error(error: Exception, cfg: DictConfig) -> BaseException:
    try:
        where, cache = str(output_dir(cfg)), cfg.paths.get("cache_dir")
    except Exception:  # the paths themselves are what is broken
        where, cache = None, None
    return user_error(error, where=where, cache_dir=cache)


def main(cfg: DictConfig | None = None) -> float | None:
    """`python train.py ...`; given a config, the task function itself (Hydra's passthrough)."""
    if cfg is not None:
        return _task(cfg)
    return cli(_task)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _task(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except SIGTERMException as e:
        # Lightning stops at the next batch and raises this SystemExit (exit code 0 unless caught).
        run_dir = output_dir(cfg)
        can_resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
        hint = f"resume with: python train.py ckpt_path={run_dir}" if can_resume else "no epoch had finished: start it again"
        _record_failure(cfg, RuntimeError(f"stopped by SIGTERM; {hint}"), status="interrupted")
        log.error("stopped by SIGTERM; %s", hint)
        raise SystemExit(128 + signal.SIGTERM) from e
    except Exception as e:
        error = _user_error(e, cfg)
        _record_failure(cfg, error)
        if _is_multirun():
            # One bad job must not stop the sweep: the failure is in its metrics.json for the report.
            # None, not nan: the Optuna sweeper hands nan to study.tell, which rejects it and ends
            # the sweep; None makes it a failed trial (tests/test_sweeps.py).
            log.exception("job failed: %s", e)
            return None
        if isinstance(error, TransferlabError):
            exit_with(error)
        raise
    _report(metrics)
    # The sweep objective (Optuna) is validation accuracy: the test split never steers anything.
    return metrics["val"].get("acc")


if __name__ == "__main__":
    main()
