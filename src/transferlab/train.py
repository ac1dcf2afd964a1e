"""`python train.py model=... data=... strategy=...`: compose the run, fit and test it, record it.

The pieces: engine/resume.py (where the run continues from), engine/assemble.py (the run built from
its config), engine/execute.py (first phase, fit, test), engine/recording.py (metrics.json),
engine/policy.py (what happens on errors and signals).
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from transferlab import CONFIG_DIR
from transferlab.engine.assemble import Run, make_run
from transferlab.engine.execute import fit_and_test
from transferlab.engine.policy import is_multirun, run_guarded
from transferlab.engine.recording import completed_record, failure_record, mlm_record, write_failure, write_record
from transferlab.engine.pretrain import train_mlm
from transferlab.engine.tasks import MLM, task_of
from transferlab.engine.trainer import maybe_compile
from transferlab.engine.resume import ResumePoint, refuse_finished, resume_point, resumed_config, stored_choices, stored_wandb_id
from transferlab.errors import RunNotValid, cli, exit_with
from transferlab.models.checkpoint import read_checkpoint
from transferlab.record import COMPLETED, FAILED, RunRecord
from transferlab.utils.provenance import code_state
from transferlab.utils.ranks import first_process
from transferlab.utils.resolvers import register as register_resolvers

log = logging.getLogger("transferlab.train")

# Frozen groups' norm layers are in eval mode on purpose (strategy.frozen_norm=eval).
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def _choices() -> dict:
    try:
        return {k: v for k, v in HydraConfig.get().runtime.choices.items() if isinstance(v, str) and not k.startswith("hydra/")}
    except ValueError:  # not under Hydra (tests calling train() directly)
        return {}


def _overrides() -> list[str]:
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def train(cfg: DictConfig, run: Run | None = None) -> dict:
    """Fit and test one configuration; returns the metrics.json content.

    `run`: an already assembled run (scripts/bench.py passes one with a smaller test split).
    """
    start = time.perf_counter()
    code_state(str(CONFIG_DIR.parent))  # the code as this process imported it (cached for the record)
    overrides = _overrides()
    if task_of(cfg) == MLM:  # continued pre-training: no classifier, no resume (engine/pretrain.py)
        record = mlm_record(cfg, train_mlm(cfg), choices=_choices(), overrides=overrides, total_s=time.perf_counter() - start)
        if first_process():
            write_record(cfg, record)
        return record.to_dict()
    point = resume_point(cfg, overrides)
    if point.finished is not None:
        return _reuse_finished(cfg, point)
    choices = _choices()
    if point.checkpoint is not None:
        ckpt = read_checkpoint(point.checkpoint)
        cfg = resumed_config(cfg, ckpt, point.checkpoint, overrides)
        refuse_finished(cfg, ckpt, point)
        choices = {**choices, **stored_choices(ckpt)}
        _continue_wandb_run(cfg, stored_wandb_id(ckpt))
        log.info("resuming from %s (epoch %s): model, data, strategy, optim and seed as stored there", point.checkpoint, ckpt.get("epoch"))
        run = run or _resumed_run(cfg, ckpt, point.checkpoint)
    run = run or make_run(cfg)
    run.module.extra_checkpoint_state["choices"] = choices
    maybe_compile(cfg, run.module)
    outcome = fit_and_test(cfg, run, resume_from=point.checkpoint)
    record = completed_record(
        cfg, run, outcome, choices=choices, overrides=overrides, total_s=time.perf_counter() - start, resumed_from=point.checkpoint,
    )
    if outcome.global_zero:
        write_record(cfg, record)
    return record.to_dict()


def _resumed_run(cfg: DictConfig, ckpt: dict, path: Path) -> Run:
    """The run rebuilt around the checkpoint's tensors: no pretrained weights or model.init_from are
    fetched (they may be offline or moved by now), and the weights are in place before anything
    reads them (the feature cache keys on them)."""
    run = make_run(cfg, weights="none", init=False)
    run.module.check_checkpoint(ckpt, path)  # a clear error if the data on disk changed since
    run.module.load_state_dict(ckpt["state_dict"])
    stored = ckpt["transferlab"]
    if stored.get("weights"):
        run.backbone.weights = stored["weights"]
        run.module.extra_checkpoint_state["weights"] = stored["weights"]
    if stored.get("first_phase") is not None:
        run.module.extra_checkpoint_state["first_phase"] = stored["first_phase"]
    return run


def _reuse_finished(cfg: DictConfig, point: ResumePoint) -> dict:
    """auto_resume found this job finished in an earlier sweep: its results, without training again."""
    record = RunRecord.from_dict(point.finished)
    record.reused_from = str(point.source_dir)
    log.info("auto_resume: this job already completed in %s; reusing its metrics.json", point.source_dir)
    if first_process():
        write_record(cfg, record)
    return record.to_dict()


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
    if c.get("task") == MLM:
        m = metrics.get("mlm") or {}
        loss = lambda v: "n/a" if v is None else f"{v:.4f}"  # noqa: E731
        print(f"\nvalidation MLM loss {loss(m.get('val_loss_before'))} -> {loss(m.get('val_loss_after'))}  |  {c['model']} on {c['data']} "
              f"({c['train_size']} texts, {m.get('steps')} steps)  |  {t['total_s']:.0f} s"
              f"\nencoder: {metrics['best_checkpoint']} (fine-tune it with model.init_from=<it>)\nresults: {metrics['run_dir']}/metrics.json",
              flush=True)
        return
    acc = f"{test['acc']:.4f}" if "acc" in test else "n/a"
    status = "" if metrics["status"] == COMPLETED else f"  |  status {metrics['status']}: {metrics['error']}"
    print(
        f"\ntest accuracy {acc}  |  {c['model']} {c['strategy']} on {c['data']} ({c['train_size']} training {'texts' if c.get('modality') == 'text' else 'images'})"
        f"  |  trainable {params['trainable']:,} of {params['total']:,} params  |  {t['total_s']:.0f} s{status}"
        f"\nresults: {metrics['run_dir']}/metrics.json",
        flush=True,
    )


register_resolvers()


def main(cfg: DictConfig | None = None) -> float | None:
    """`python train.py ...`; given a config, the task function itself (Hydra's passthrough)."""
    if cfg is not None:
        return _task(cfg)
    return cli(_task)


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def _task(cfg: DictConfig) -> float | None:
    def record_failure(error: BaseException, status: str) -> None:
        # Under trainer=multinode every rank gets here; the run dir's record is the first one's.
        if first_process():
            write_failure(cfg, failure_record(cfg, error, status, _overrides(), _choices()))

    metrics = run_guarded(cfg, train, record_failure)
    if metrics is None:
        return None
    if first_process():
        _report(metrics)
    if metrics["status"] == FAILED:
        # Trained, but not what the strategy says: the record keeps the metrics, the exit status tells.
        error = RunNotValid(metrics["error"])
        if is_multirun():
            log.error("job failed: %s", error)
            return None
        exit_with(error)
    # The sweep objective (Optuna) is validation accuracy: the test split never steers anything.
    return metrics["val"].get("acc") if metrics["status"] == COMPLETED else None


if __name__ == "__main__":
    main()
