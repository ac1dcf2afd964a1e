"""Runs that survive: killed mid-epoch (SIGKILL, SIGTERM) during `gradual` after an unfreeze, then
resumed, they end with the uninterrupted run's metrics; the same command twice gives the same
metrics; sweep jobs launched again resume or reuse their earlier selves (auto_resume)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
# gradual over 4 epochs, groups unfreezing at epochs 1 and 2; the kill lands in epoch 2, mid-epoch,
# after both unfreezes and after epoch 1's last.ckpt.
RUN = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "data.source_args.train_per_class=24", "data.batch_size=8", "data.val_per_class=6",
    "trainer.accelerator=cpu", "trainer.max_epochs=4", "strategy=gradual", "strategy.milestones=[1,2]",
    "strategy.unfreeze_top=2", "+trainer.enable_progress_bar=false",
]
KILL = ["+callbacks.kill._target_=killer.KillAt", "+callbacks.kill.epoch=2", "+callbacks.kill.batch=3"]


def train(root: Path, *args: str, expect: int = 0) -> subprocess.CompletedProcess:
    # This checkout's src first: an editable install elsewhere (another worktree) must not stand in for it.
    path = os.pathsep.join([str(PLUGINS), str(ROOT / "src")])
    env = {**os.environ, "TRANSFERLAB_ROOT": str(root), "HF_HUB_OFFLINE": "1", "PYTHONPATH": path}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == expect, f"exit {proc.returncode} (expected {expect})\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def runs(root: Path, task: str) -> list[Path]:
    return sorted(p for p in (root / "logs" / task / "runs").iterdir() if p.is_dir())


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def per_epoch(run_dir: Path) -> dict[int, dict[str, float]]:
    """Step -> the learning rates and trainable-parameter count logged at each epoch's start/end."""
    rows = {}
    with open(run_dir / "csv" / "metrics.csv") as f:
        for row in csv.DictReader(f):
            keep = {k: float(v) for k, v in row.items() if v and (k.startswith("lr-") or k.startswith("finetune/"))}
            if keep:
                rows.setdefault(int(row["step"]), {}).update(keep)
    return rows


def assert_same_results(a: dict, b: dict, tol: float = 1e-4) -> None:
    for split in ("val", "test"):
        assert a[split].keys() == b[split].keys()
        for k in a[split]:
            assert abs(a[split][k] - b[split][k]) <= tol, (split, k, a[split][k], b[split][k])


def plain_and_resumed(root: Path, args: list[str], task: str) -> tuple[dict, dict]:
    """The records of `args` run through, and run again SIGTERMed mid-epoch 2 and resumed."""
    train(root, *args, f"task_name={task}_plain")
    (plain,) = runs(root, f"{task}_plain")
    train(root, *args, *KILL, "+callbacks.kill.signal_name=SIGTERM", f"task_name={task}_killed", expect=143)
    (stopped,) = runs(root, f"{task}_killed")
    train(root, f"ckpt_path={stopped}", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", f"task_name={task}_killed")
    _, resumed = runs(root, f"{task}_killed")
    return metrics(plain), metrics(resumed)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    train(root, *RUN, "task_name=plain")
    (run_dir,) = runs(root, "plain")
    return run_dir


@pytest.mark.slow
def test_same_command_twice_gives_identical_metrics(uninterrupted, tmp_path):
    train(tmp_path, *RUN, "task_name=plain")
    (again,) = runs(tmp_path, "plain")
    a, b = metrics(uninterrupted), metrics(again)
    assert a["val"] == b["val"] and a["test"] == b["test"]
    assert per_epoch(uninterrupted) == per_epoch(again)


@pytest.mark.slow
def test_sigterm_mid_epoch_then_ckpt_path_last_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    proc = train(tmp_path, *RUN, *KILL, "+callbacks.kill.signal_name=SIGTERM", "task_name=t", expect=143)
    (stopped,) = runs(tmp_path, "t")
    m = metrics(stopped)
    assert m["status"] == "interrupted"
    assert f"ckpt_path={stopped}" in m["error"] and "SIGTERM" in proc.stderr + proc.stdout
    # ckpt_path=last alone: model, data and strategy come from the checkpoint, not the defaults.
    train(tmp_path, "ckpt_path=last", "task_name=t", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false")
    stopped_again, resumed = runs(tmp_path, "t")
    assert stopped_again == stopped and metrics(stopped)["status"] == "interrupted"  # untouched
    r = metrics(resumed)
    assert r["status"] == "completed" and r["resumed_from"] == str(stopped / "checkpoints" / "last.ckpt")
    assert r["config"]["strategy"] == "gradual" and r["config"]["model"] == "timm"
    assert_same_results(r, metrics(uninterrupted))
    expected = per_epoch(uninterrupted)
    logged = per_epoch(resumed)
    assert logged and set(logged) <= set(expected)
    for step, values in logged.items():
        assert values == pytest.approx(expected[step], rel=1e-6), step  # lrs and unfrozen groups per epoch


@pytest.mark.slow
def test_sigkill_then_auto_resume_continues_then_reuses(uninterrupted, tmp_path):
    args = [*RUN, "task_name=a", "auto_resume=true"]
    train(tmp_path, *args, *KILL, expect=-9)  # SIGKILL mid-epoch 2: no metrics.json at all
    (killed,) = runs(tmp_path, "a")
    assert not (killed / "metrics.json").exists() and (killed / "checkpoints" / "last.ckpt").is_file()

    train(tmp_path, *args)  # launched again: finds its earlier self and continues from last.ckpt
    _, resumed = runs(tmp_path, "a")
    r = metrics(resumed)
    assert r["resumed_from"] == str(killed / "checkpoints" / "last.ckpt")
    assert_same_results(r, metrics(uninterrupted))

    proc = train(tmp_path, *args)  # once more: the job is done, its results are reused
    _, _, reused = runs(tmp_path, "a")
    assert metrics(reused)["reused_from"] == str(resumed)
    assert metrics(reused)["test"] == r["test"]
    assert not (reused / "checkpoints").exists()  # no training happened
    assert "reusing" in proc.stderr + proc.stdout

    train(tmp_path, *args, "seed=7", "trainer.max_epochs=3")  # another job (its milestones 1, 2 fit 3 epochs): starts afresh
    assert metrics(runs(tmp_path, "a")[-1])["resumed_from"] is None


@pytest.mark.slow
def test_resume_refuses_a_command_line_that_changes_the_experiment(uninterrupted, tmp_path):
    proc = train(tmp_path, f"ckpt_path={uninterrupted}", "strategy=full", "trainer.accelerator=cpu", expect=2)
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert "strategy" in err[0] and "'gradual'" in err[0] and "drop those overrides" in err[0]


def test_ckpt_path_to_a_run_without_checkpoints_says_so(tmp_path):
    from omegaconf import OmegaConf

    from transferlab.errors import CheckpointError
    from transferlab.engine.resume import resume_point

    empty = tmp_path / "logs" / "train" / "runs" / "2026-01-01_00-00-00-000000"
    empty.mkdir(parents=True)
    cfg = OmegaConf.create({"ckpt_path": str(empty), "paths": {"output_dir": str(tmp_path / "new"), "log_dir": str(tmp_path / "logs")}, "task_name": "train"})
    with pytest.raises(CheckpointError, match="no checkpoints/last.ckpt: it stopped before its first epoch ended"):
        resume_point(cfg, [])
    cfg.ckpt_path = "last"
    with pytest.raises(CheckpointError, match="no run of task train .* has a checkpoints/last.ckpt"):
        resume_point(cfg, [])
    cfg.ckpt_path = str(tmp_path / "nope.ckpt")
    with pytest.raises(CheckpointError, match="no such checkpoint or run directory"):
        resume_point(cfg, [])


def test_job_identity_ignores_where_and_how_a_job_runs():
    from transferlab.engine.resume import job_identity

    a = job_identity(["strategy=full", "seed=1", "auto_resume=true", "hydra.launcher.n_jobs=2", "trainer.devices=1"])
    b = job_identity(["seed=1", "strategy=full", "logger=wandb", "trainer.accelerator=cpu"])
    assert a == b == ("seed=1", "strategy=full")
    assert job_identity(["seed=2", "strategy=full"]) != a


@pytest.mark.slow
def test_sigint_is_recorded_and_resumable_like_sigterm(tmp_path):
    proc = train(tmp_path, *RUN, *KILL, "+callbacks.kill.signal_name=SIGINT", "task_name=i", expect=130)
    (stopped,) = runs(tmp_path, "i")
    m = metrics(stopped)
    assert m["status"] == "interrupted" and "stopped by SIGINT" in m["error"]
    assert f"resume with: python train.py ckpt_path={stopped}" in m["error"] and "SIGINT" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_a_finished_run_is_not_resumed_again_without_more_epochs(uninterrupted, tmp_path):
    proc = train(tmp_path, f"ckpt_path={uninterrupted}", "trainer.accelerator=cpu", "task_name=f", expect=2)
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"error: {uninterrupted} already trained its 4 epochs (trainer.max_epochs=4)") and "Traceback" not in proc.stderr
    assert "trainer.max_epochs=<more than 4>" in line
    refused = [json.loads(p.read_text()) for p in (tmp_path / "logs").rglob("metrics.json")]
    assert [r["status"] for r in refused] == ["failed"]  # the refusal is recorded; no second result of the same run
    # More epochs: it trains on, and says where it came from.
    train(tmp_path, f"ckpt_path={uninterrupted}", "trainer.accelerator=cpu", "task_name=f", "trainer.max_epochs=5")
    refused_dir, longer = runs(tmp_path, "f")
    m = metrics(longer)
    assert m["status"] == "completed" and m["config"]["max_epochs"] == 5 and m["resumed_from"].startswith(str(uninterrupted))


@pytest.mark.slow
def test_lora_resumes_exactly_with_its_adapters(tmp_path):
    lora = [a for a in RUN if not a.startswith("strategy")] + ["strategy=lora", "strategy.r=4"]
    plain, r = plain_and_resumed(tmp_path, lora, "lora")
    assert r["status"] == "completed" and r["config"]["strategy"] == "lora"
    assert_same_results(r, plain)
    trained = r["trained"]["units"]
    assert trained["head"] == r["trained"]["optimizer_steps"] and not r["trained"]["untrained"]
    assert r["params"]["trainable"] < 0.2 * r["params"]["total"]  # adapters and the head


@pytest.mark.slow
def test_the_imbalance_options_resume_exactly(tmp_path):
    # The balanced sampler's order is a function of (seed, epoch) and the loss terms are rebuilt
    # from the data, so a run killed mid-epoch and resumed ends as the uninterrupted one.
    args = [*RUN, "data.skew={0:0.5}", "data.sampler=balanced", "optim.class_weights=balanced", "optim.logit_adjustment=true"]
    plain, resumed = plain_and_resumed(tmp_path, args, "imbalance")
    assert plain["imbalance"]["sampler"] == "balanced" and resumed["imbalance"] == plain["imbalance"]
    assert resumed["resumed_from"] and resumed["status"] == "completed"
    assert_same_results(plain, resumed)
