"""Run an assembled experiment: the strategy's first phase, the training loop, the test.

What happened comes back as an `Outcome`; recording.py turns it into the run record.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from transferlab.data.caches.feature_cache import FeatureCache, FeatureDataModule, state_dict_digest
from transferlab.finetune import classical
from transferlab.engine.assemble import Run
from transferlab.engine.calibration import calibrate_tested, calibration_method, wants_temperature
from transferlab.engine.builders import planned_epochs
from transferlab.engine.trainer import finetune_callback, make_trainer
from transferlab.utils.run_stats import RunStats

log = logging.getLogger(__name__)

# The first phase's summary rides in checkpoints, so a run resumed after it reports it too.
FIRST_PHASE_KEY = "first_phase"
LAST_PHASE_KEY = "last_phase"


@dataclass
class Outcome:
    val: dict
    test: dict
    best_checkpoint: str | None
    stats: RunStats
    test_s: float = 0.0
    features: FeatureDataModule | None = None
    first_phase: dict | None = None
    last_phase: dict | None = None
    params_total: int | None = None  # when not the module's (a classical baseline fits no network)
    trained: dict = field(default_factory=dict)
    max_trainable_params: int = 0
    global_zero: bool = True  # this process writes the record (under DDP the job's process does)
    # Per split (val, test), the counts, rows the true class, and the confidence bins' table;
    # recording.py writes them, the per-class scores and their pictures.
    confusions: dict = field(default_factory=dict)
    reliability: dict = field(default_factory=dict)
    calibration: dict | None = None  # eval.calibrate's entry (engine/calibration.py)


def _metrics(results: dict, stage: str) -> dict:
    return {k.split("/", 1)[1]: float(v) for k, v in results.items() if k.startswith(f"{stage}/")}


def _trained(run: Run, trainer: pl.Trainer, cfg: DictConfig, fitted: bool, first_phase: dict | None) -> tuple[dict, int]:
    """What trained: optimizer steps per unit, and the units the strategy planned that took none."""
    cb = finetune_callback(trainer)
    epochs = planned_epochs(cfg)
    planned = [u.name for u in run.module.plan.units() if fitted and (epochs is None or u.unfreeze_epoch < epochs)]
    trained = {
        "optimizer_steps": cb.optimizer_steps,
        "units": dict(sorted(cb.unit_steps.items())),
        "untrained": [u for u in planned if cb.unit_steps.get(u, 0) == 0],
    }
    if first_phase is not None:
        trained["first_phase"] = first_phase.get("solver", "first phase")
    return trained, cb.max_trainable_params or run.module.trainable_params()


# --- cached features (extract's fast path, the probe of lp_ft and extract's lbfgs, setfit's refit) ----
def _extraction_device(cfg: DictConfig) -> torch.device:
    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def make_feature_datamodule(cfg: DictConfig, run: Run) -> FeatureDataModule:
    """The frozen backbone's eval features of every split, cached under paths.cache_dir."""
    images = run.datamodule
    if run.strategy.feature_cache and getattr(getattr(images.transform, "augment", None), "enabled", False):
        log.info(
            "strategy.feature_cache=true: train-time augmentation (data.augment) is off for this run; "
            "each split's features are computed once, with the eval preprocessing and the backbone in eval mode"
        )
    key_args = {
        "model": run.backbone.name,
        "weights": run.backbone.weights,
        "weights_digest": state_dict_digest(run.backbone.model),
        "preprocess": run.backbone.input_spec(),
    }
    cache = FeatureCache(cfg.paths.cache_dir)
    log.info("feature cache: %s", cache.root)
    return FeatureDataModule(
        images, cache, run.backbone, key_args,
        eval_views=("image", "hflip") if run.module.tta_hflip else ("image",),
        device=_extraction_device(cfg),
    )


def fit_and_test(cfg: DictConfig, run: Run, resume_from: Path | None = None) -> Outcome:
    strategy, module = run.strategy, run.module
    if not strategy.trains_network:
        return fit_classical(cfg, run)
    features = make_feature_datamodule(cfg, run) if strategy.feature_cache or strategy.has_first_phase else None
    stats = RunStats()
    trainer = make_trainer(cfg, [stats])

    first_phase = module.extra_checkpoint_state.get(FIRST_PHASE_KEY)
    if strategy.has_first_phase and first_phase is None:  # a resumed run's weights already hold it
        result = strategy.first_phase(module.head, features)
        first_phase = result.summary() if hasattr(result, "summary") else result
        module.extra_checkpoint_state[FIRST_PHASE_KEY] = first_phase

    loop_data = features if strategy.feature_cache else run.datamodule
    last_phase = None
    if strategy.fits:
        trainer.fit(module, datamodule=loop_data, ckpt_path=str(resume_from) if resume_from is not None else None)
        val = _metrics(trainer.callback_metrics, "val")
        checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if checkpoint is not None and checkpoint.best_model_score is not None:
            val["acc"] = float(checkpoint.best_model_score)  # the epoch whose weights are tested
        if strategy.has_last_phase:
            features, best, val, last_phase = _last_phase(cfg, run, trainer, best)
            loop_data = features
    else:
        # The first phase was the whole training: its checkpoint is the one tested.
        results = trainer.validate(module, datamodule=loop_data, verbose=False)
        val = _metrics(results[0] if results else {}, "val")
        best = str(Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt")
        trainer.save_checkpoint(best)
        stats.fit_s = (first_phase or {}).get("fit_s", 0.0)
    # Read before testing: test's ckpt_path restores the callbacks' state of the best epoch.
    trained, max_trainable = _trained(run, trainer, cfg, strategy.fits, first_phase)
    if last_phase is not None:
        trained["last_phase"] = last_phase.get("solver", "last phase")

    test, test_s, calibration = {}, 0.0, None
    if cfg.get("test", True):
        module.keep_logits = wants_temperature(cfg)
        t0 = time.perf_counter()
        results = trainer.test(module, datamodule=loop_data, ckpt_path=best or None, verbose=False)
        test_s = time.perf_counter() - t0
        test = _metrics(results[0] if results else {}, "test")
        if module.keep_logits:
            calibration = calibrate_tested(cfg, module, trainer, loop_data)
    return Outcome(
        val=val, test=test, best_checkpoint=best or None, stats=stats, test_s=test_s, features=features,
        first_phase=first_phase, last_phase=last_phase, trained=trained, max_trainable_params=max_trainable,
        global_zero=trainer.is_global_zero, confusions=dict(module.confusions), reliability=dict(module.reliability),
        calibration=calibration,
    )


def _last_phase(cfg: DictConfig, run: Run, trainer: pl.Trainer, best: str) -> tuple[FeatureDataModule, str, dict, dict]:
    """The strategy's phase after the loop, on the best epoch's backbone: its features (keyed by
    the tuned weights' digest, so never a stale cache entry), the refitted head saved as the
    checkpoint to test, and validation of that head."""
    if best:
        state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
        run.module.load_state_dict(state)
    features = make_feature_datamodule(cfg, run)
    result = run.strategy.last_phase(run.module.head, features)
    summary = result.summary() if hasattr(result, "summary") else (result or {})
    run.module.extra_checkpoint_state[LAST_PHASE_KEY] = summary
    path = str(Path(cfg.paths.output_dir) / "checkpoints" / "refit.ckpt")
    trainer.save_checkpoint(path)
    results = trainer.validate(run.module, datamodule=features, verbose=False)
    return features, path, _metrics(results[0] if results else {}, "val"), summary


def fit_classical(cfg: DictConfig, run: Run) -> Outcome:
    """A baseline with no network: fitted on the training subset, scored on val and test, pickled."""
    dm = run.datamodule
    dm.setup("fit")
    stats = RunStats()
    t0 = time.perf_counter()
    model = run.strategy.fit_classical(dm.splits["train"], dm.splits["val"], dm.num_classes)
    stats.fit_s = time.perf_counter() - t0
    scored = {"val": classical.scores(model, dm.splits["val"], dm.num_classes)}
    test_s = 0.0
    if cfg.get("test", True):
        t0 = time.perf_counter()
        scored["test"] = classical.scores(model, dm.splits["test"], dm.num_classes)
        test_s = time.perf_counter() - t0
    calibration = None
    if wants_temperature(cfg):
        log.warning("eval.calibrate=temperature: strategy=%s has no logits to scale; it is left as fitted", run.strategy.name)
        calibration = {"method": calibration_method(cfg), "skipped": f"strategy={run.strategy.name} has no network"}
    path = classical.save_model(model, Path(cfg.paths.output_dir) / "checkpoints" / f"{run.strategy.name}.pkl")
    trained = {"optimizer_steps": 0, "units": {}, "untrained": [], "first_phase": run.strategy.name}
    return Outcome(val=scored["val"].metrics, test=scored["test"].metrics if "test" in scored else {}, best_checkpoint=path,
                   stats=stats, test_s=test_s, first_phase=model.summary, trained=trained,
                   max_trainable_params=model.num_parameters, params_total=model.num_parameters,
                   confusions={k: v.confusion for k, v in scored.items()},
                   reliability={k: v.reliability for k, v in scored.items()}, calibration=calibration)
