"""The run record of one run (record.py's schema), built from its config and what happened: the
one place records are built, for a classification run, a task=mlm run and a run that failed.

A record is `completed` only if the run trained what its strategy says: every unit the plan meant
to train took an optimizer step (a task=mlm run: any step), and the checkpoint it tested is one it
wrote. Debug runs (fast_dev_run, overfit_batches) are recorded as `debug`: they check that a setup
runs, they are not results.

Where the Outcome carries a test confusion matrix, the record holds it with the class names, the
per-class precision, recall and F1 of each split that has one, and the reliability tables; the
matrix's picture and the test reliability diagram are drawn beside metrics.json. A picture that
cannot be drawn costs a warning, never the record.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from transferlab import CONFIG_DIR
from transferlab.engine.assemble import Run
from transferlab.engine.builders import debug_run
from transferlab.engine.execute import Outcome
from transferlab.engine.imbalance import imbalance_entry
from transferlab.engine.pretrain import MLMRun
from transferlab.engine.tasks import MLM, task_of
from transferlab.errors import output_error
from transferlab.models.backbone import count_params, find_kind, kind_name
from transferlab.record import COMPLETED, DEBUG, FAILED, Params, RunConfig, RunRecord, Timing
from transferlab.utils.confusion import PICTURE_FILE, draw_confusion, per_class_scores
from transferlab.utils.probabilities import N_BINS, ece_of_table, draw_reliability
from transferlab.utils.probabilities import PICTURE_FILE as RELIABILITY_FILE
from transferlab.utils.provenance import provenance

log = logging.getLogger(__name__)

DEBUG_ERROR = "a debug run (fast_dev_run or overfit_batches): it checks the setup, it is not a result"


def _get(node: Any, key: str) -> Any:
    try:
        value = node.get(key) if node is not None else None
    except Exception:  # an interpolation that cannot resolve: the record of a failure must still be written
        return None
    return value if isinstance(value, (str, int, float, bool, type(None))) else str(value)


def run_config(cfg: DictConfig, choices: dict, run: Run | None = None) -> RunConfig:
    """The values a table of runs is grouped by, read without casting: a run that failed on a bad
    value records the value as given."""
    model, data, strategy_cfg = cfg.get("model"), cfg.get("data"), cfg.get("strategy")
    pretrained = _get(strategy_cfg, "pretrained")
    strategy = run.strategy if run is not None else None
    return RunConfig(
        model=choices.get("model", _get(model, "name")),
        model_name=_get(model, "name"),
        modality=run.backbone.modality if run is not None else None,
        weights=_get(model, "weights") if pretrained is not False and (strategy is None or strategy.trains_network) else "none",
        strategy=_get(strategy_cfg, "name"),
        variant=strategy.variant if strategy is not None else None,
        data=choices.get("data", _get(data, "source")),
        samples_per_class=_get(data, "samples_per_class"),
        train_fraction=_get(data, "train_fraction"),
        train_size=run.datamodule.split_sizes().get("train") if run is not None else None,
        image_size=_get(data, "image_size"),
        seed=_get(cfg, "seed"),
        max_epochs=_get(cfg.get("trainer"), "max_epochs"),
        lr=_get(strategy_cfg, "lr"),
        decay=_get(strategy_cfg, "decay"),
        unfreeze_top=_get(strategy_cfg, "unfreeze_top"),
        solver=_get(strategy_cfg, "solver"),
        strategy_args=strategy.knobs() if strategy is not None else {},
        task=_task(cfg),
        tune_arm=_get(cfg.get("tune"), "arm"),
    )


def _task(cfg: DictConfig) -> str | None:
    try:
        return task_of(cfg)
    except Exception:  # the record of a failure on a bad task name must still be written
        return None


def run_status(cfg: DictConfig, outcome: Outcome) -> tuple[str, str | None]:
    if debug_run(cfg):
        return DEBUG, DEBUG_ERROR
    untrained = outcome.trained.get("untrained") or []
    if untrained:
        return FAILED, (
            f"the strategy planned to train {', '.join(untrained)}, but they took no optimizer step "
            "(a learning rate of 0 throughout, or no batch reached them): the run is not the strategy it names"
        )
    best = outcome.best_checkpoint
    if best:
        mine = (Path(cfg.paths.output_dir) / "checkpoints").resolve()
        if not Path(best).is_file() or Path(best).resolve().parent != mine:
            return FAILED, f"the tested checkpoint {best} is not one this run wrote into {mine}"
    return COMPLETED, None


def completed_record(cfg: DictConfig, run: Run, outcome: Outcome, *, choices: dict, overrides: list[str],
                     total_s: float, resumed_from: Path | None) -> RunRecord:
    status, error = run_status(cfg, outcome)
    stats = outcome.stats
    record = RunRecord(
        status=status,
        error=error,
        test=outcome.test,
        val=outcome.val,
        params=Params(total=outcome.params_total if outcome.params_total is not None else count_params(run.module),
                      trainable=outcome.max_trainable_params),
        time=Timing(
            fit_s=round(stats.fit_s, 2),
            test_s=round(outcome.test_s, 2),
            total_s=round(total_s, 2),
            train_images_per_s=round(stats.train_images_per_s or 0.0, 1),
        ),
        config=run_config(cfg, choices, run),
        data_sizes=run.datamodule.split_sizes(),
        truncated=run.datamodule.truncated,
        trained=outcome.trained,
        weights_loaded=run.backbone.weights,
        best_checkpoint=outcome.best_checkpoint,
        run_dir=str(Path(cfg.paths.output_dir).resolve()),
        overrides=overrides,
        resumed_from=str(resumed_from) if resumed_from is not None else None,
        probe=outcome.first_phase or outcome.last_phase,
        mlm=run.pretrain,
        confusion=confusion_entry(run, outcome),
        imbalance=imbalance_entry(cfg, run.datamodule, run.module.loss_terms),
        per_class=per_class_entry(run, outcome),
        reliability=reliability_entry(outcome),
        calibration=outcome.calibration,
        provenance=provenance(CONFIG_DIR.parent),
    )
    if outcome.features is not None:
        cache = outcome.features.cache.stats
        record.time.features_s = round(cache.build_s, 2)
        record.feature_cache = {
            "dir": str(outcome.features.cache.root),
            "hits": cache.hits, "built": cache.built, "rebuilt": cache.rebuilt,
            "train_augment": False,
            # Test accuracy comes from cached test features through the head when the loop ran on
            # them; eval.py runs the same checkpoint through the backbone on the test images and
            # agrees (tests/test_feature_cache.py).
            "test_on": "cached_features" if run.strategy.feature_cache or run.strategy.has_last_phase else "images",
        }
    return record


def mlm_status(cfg: DictConfig, steps: int) -> tuple[str, str | None]:
    if debug_run(cfg):
        return DEBUG, DEBUG_ERROR
    if steps == 0:
        return FAILED, "the MLM took no optimizer step"
    return COMPLETED, None


def mlm_record(cfg: DictConfig, mlm: MLMRun, *, choices: dict, overrides: list[str], total_s: float) -> RunRecord:
    """A task=mlm run's record: the validation MLM loss, the encoder it wrote, the phase's summary."""
    prep, summary, d = mlm.prep, mlm.summary, cfg.data
    status, error = mlm_status(cfg, summary["steps"])
    return RunRecord(
        status=status, error=error, test={},
        val={k: v for k, v in (("mlm_loss", summary["val_loss_after"]), ("mlm_loss_before", summary["val_loss_before"])) if v is not None},
        params=Params(total=count_params(prep.model), trainable=count_params(prep.model, trainable_only=True)),
        time=Timing(fit_s=summary["fit_s"], test_s=0.0, total_s=round(total_s, 2), train_images_per_s=summary["texts_per_s"]),
        config=RunConfig(model=choices.get("model", str(cfg.model.name)), model_name=str(cfg.model.name),
                         modality=find_kind(kind_name(cfg.model)).modality, weights=prep.weights, strategy=MLM, task=MLM,
                         data=choices.get("data", d.get("source")), samples_per_class=d.get("samples_per_class"),
                         train_fraction=d.get("train_fraction"), train_size=len(prep.train_texts), seed=cfg.get("seed"),
                         lr=prep.config.lr, strategy_args=summary["knobs"]),
        data_sizes=prep.data_sizes, truncated=prep.truncated,
        trained={"optimizer_steps": summary["steps"], "units": {"mlm": summary["steps"]}, "untrained": []},
        weights_loaded=prep.weights, best_checkpoint=str(mlm.checkpoint), run_dir=str(Path(cfg.paths.output_dir).resolve()),
        overrides=overrides, mlm=summary, provenance=provenance(CONFIG_DIR.parent),
    )


def confusion_entry(run: Run, outcome: Outcome) -> dict | None:
    matrix = outcome.confusions.get("test")
    if matrix is None:
        return None
    return {"split": "test", "classes": [str(c) for c in run.datamodule.classes], "matrix": matrix}


def per_class_entry(run: Run, outcome: Outcome) -> dict | None:
    classes = [str(c) for c in run.datamodule.classes]
    entry = {split: per_class_scores(matrix, classes) for split, matrix in outcome.confusions.items()}
    return entry or None


def reliability_entry(outcome: Outcome) -> dict | None:
    if not outcome.reliability:
        return None
    return {"bins": N_BINS, **{split: {"ece": ece_of_table(table), "table": table}
                               for split, table in outcome.reliability.items()}}


def confusion_title(record: RunRecord) -> str:
    c = record.config
    # The architecture, not the preset (`timm`, `hf` say little); a local encoder's folder by its name.
    model = Path(str(c.model_name)).name if c.model_name else c.model
    strategy = f"{c.strategy} ({c.variant})" if c.variant else str(c.strategy)
    scores = [f"{label} {record.test[key]:.4f}" for key, label in (("acc", "test acc"), ("f1_macro", "macro-F1"))
              if isinstance(record.test.get(key), (int, float))]
    return f"{model} · {strategy} · {c.data}\n" + " · ".join(scores)


def _draw_picture(entry: dict, draw, path: Path, what: str) -> None:
    """`draw(path)`, and the entry names the picture only once it is written, so a report never
    links one that is not there."""
    entry.pop("picture", None)  # a reused record's picture is drawn again in this run dir
    try:
        draw(path)
    except Exception as e:  # the results matter more than their picture
        log.warning("could not draw the %s into %s (%s: %s); metrics.json still holds its numbers", what, path,
                    type(e).__name__, e)
        return
    entry["picture"] = path.name


def draw_reliability_picture(record: RunRecord, run_dir: Path) -> None:
    """The test split's reliability diagram drawn as run_dir/reliability.png."""
    table = ((record.reliability or {}).get("test") or {}).get("table")
    if table:
        _draw_picture(record.reliability, lambda path: draw_reliability(table, path, confusion_title(record)),
                      run_dir / RELIABILITY_FILE, "reliability diagram")


def draw_confusion_picture(record: RunRecord, run_dir: Path) -> None:
    """The record's confusion matrix drawn as run_dir/confusion_matrix.png."""
    confusion = record.confusion
    if confusion:
        _draw_picture(confusion, lambda path: draw_confusion(confusion["matrix"], confusion["classes"],
                                                             confusion_title(record), path),
                      run_dir / PICTURE_FILE, "confusion matrix")


def failure_record(cfg: DictConfig, error: BaseException, status: str, overrides: list[str], choices: dict) -> RunRecord:
    try:
        run_dir = str(Path(cfg.paths.output_dir).resolve())
    except Exception:  # the paths themselves are what is broken
        run_dir = None
    return RunRecord(
        status=status,
        error=f"{type(error).__name__}: {error}",
        config=run_config(cfg, choices),
        run_dir=run_dir,
        overrides=overrides,
        provenance=provenance(CONFIG_DIR.parent),
    )


def record_path(cfg: DictConfig) -> Path:
    return Path(cfg.paths.output_dir) / "metrics.json"


def write_failure(cfg: DictConfig, record: RunRecord) -> None:
    """A failure's record, if the disk takes it: a read-only or full disk must not hide the original error."""
    try:
        record.write(record_path(cfg))
    except Exception as e:
        log.error("could not record the failure in metrics.json: %s", e)


def write_record(cfg: DictConfig, record: RunRecord) -> None:
    """metrics.json in the run directory, with the confusion matrix's picture beside it; on a full or
    read-only disk the finished run's results are printed as one JSON line first, so they are never lost."""
    path = record_path(cfg)
    draw_confusion_picture(record, path.parent)
    draw_reliability_picture(record, path.parent)
    try:
        record.write(path)
    except OSError as e:
        print(json.dumps(record.to_dict(), default=str), flush=True)
        error = output_error(e, where=str(path), cache_dir=cfg.paths.get("cache_dir"))
        if error is None:
            raise
        raise type(error)(f"{error} (this run's metrics are printed above as JSON)") from e
