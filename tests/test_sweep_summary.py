"""A sweep ends honestly: one line on how its jobs ended, and exit status 1 when any did not
complete, after every job has run (Optuna's best trial is still saved first)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.callbacks import Callbacks
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from test_cli import run_cli
from test_sweeps import TINY, _fake_job, _jobs, _sweep_dir
from transferlab import CONFIG_DIR
from transferlab.sweep.summary import SweepSummary, job_outcomes, summary_line

ERROR = "ConfigError: strategy.unfreeze_top=99 but this backbone has 5 block groups: use 0..5 (or null for all)"


def _end(sweep: Path, callback: SweepSummary | None = None, job_name: str = "train") -> int:
    cfg = OmegaConf.create({"hydra": {"job": {"name": job_name}, "sweep": {"dir": str(sweep)}}})
    try:
        (callback or SweepSummary()).on_multirun_end(config=cfg)
    except SystemExit as e:
        return e.code
    return 0


def _failed(sweep: Path, num: int, error: str = ERROR) -> Path:
    job = _fake_job(sweep, num, [f"seed={num}"], None, "failed")
    record = json.loads((job / "metrics.json").read_text())
    (job / "metrics.json").write_text(json.dumps({**record, "error": error}))
    return job


def test_failed_and_unfinished_jobs_exit_1_with_one_line(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, ["seed=0"], 0.5)
    _failed(sweep, 1)
    _failed(sweep, 3, "RuntimeError: first line\n  second line")
    (sweep / "2" / ".hydra").mkdir(parents=True)  # started, never wrote its record
    (sweep / ".device_pool").mkdir()  # the pool's dir is not a job
    assert [o.status for o in job_outcomes(sweep)] == ["completed", "failed", "unfinished", "failed"]

    assert _end(sweep) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: 3 of 4 jobs did not complete: 1 (failed: {ERROR}), 2 (unfinished: no metrics.json")
    assert "3 (failed: RuntimeError: first line second line)" in err
    assert err.rstrip().endswith(f"; see {sweep / '1' / 'metrics.json'}; transferlab report {sweep} lists them")


def test_only_failed_jobs_say_failed(tmp_path):
    sweep = tmp_path / "sweep"
    for num in range(8):
        _failed(sweep, num)
    line = summary_line(sweep, job_outcomes(sweep))
    assert line.startswith(f"error: 8 of 8 jobs failed: 0 ({ERROR}), 1 (")
    assert ", and 3 more; see " in line  # a long sweep's line stays readable


def test_all_completed_exits_0_and_reused_jobs_count_as_completed(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, ["seed=0"], 0.5)
    reused = _fake_job(sweep, 1, ["seed=1"], 0.6)
    record = json.loads((reused / "metrics.json").read_text())
    (reused / "metrics.json").write_text(json.dumps({**record, "reused_from": "/earlier/sweep/1"}))

    assert _end(sweep) == 0
    out, err = capsys.readouterr()
    assert out == f"sweep: all 2 jobs completed (1 reused from an earlier sweep): {sweep}; transferlab report {sweep} tabulates them\n"
    assert err == ""


def test_no_job_dirs_other_entry_points_or_off_leave_the_exit_status_alone(tmp_path, capsys):
    assert _end(tmp_path / "never-written") == 0
    sweep = tmp_path / "sweep"
    (sweep / "0" / ".hydra").mkdir(parents=True)  # an eval.py job: it writes no metrics.json
    assert _end(sweep, job_name="eval") == 0
    assert _end(sweep, SweepSummary(entry_points=[])) == 0
    out, err = capsys.readouterr()  # nothing printed as a verdict (a logged warning may reach stderr)
    assert out == "" and "error:" not in err
    assert _end(sweep) == 1  # a train.py job without its metrics.json did not finish


def test_optuna_best_trial_is_saved_before_the_failed_sweep_exits(tmp_path, capsys):
    """The callbacks as hparams_search=optuna composes them, called as Hydra calls them at the end."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=["hparams_search=optuna", f"hydra.sweep.dir={tmp_path}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    _fake_job(tmp_path, 0, ["strategy.lr=0.001"], 0.7)
    _failed(tmp_path, 1, "DivergedError: loss became nan at step 1")  # a failed trial: its task returned None
    (tmp_path / "optimization_results.yaml").write_text("name: optuna\nbest_params: {strategy.lr: 0.001}\nbest_value: 0.7\n")

    with pytest.raises(SystemExit) as exit_:
        Callbacks(cfg).on_multirun_end(config=cfg, config_name="train")
    assert exit_.value.code == 1
    assert (tmp_path / "best_trial.yaml").is_file()
    out, err = capsys.readouterr()
    assert "Optuna best trial: val acc 0.7" in out
    assert err.splitlines()[-1].startswith("error: 1 of 2 jobs failed: 1 (DivergedError: loss became nan at step 1)")


@pytest.mark.slow
def test_sweep_with_failed_jobs_finishes_the_others_then_exits_1(tmp_path):
    """Four tiny jobs on the basic launcher; partial cannot unfreeze 99 of resnet10t's 5 groups, so
    jobs 2 and 3 fail while their config is checked, and the jobs before them still train."""
    proc = run_cli("train.py", ["-m", *TINY, "strategy=partial", "strategy.unfreeze_top=3,99", "seed=1,2"], tmp_path, check=False)
    sweep = _sweep_dir(tmp_path, "train")
    jobs = _jobs(sweep)
    assert [jobs[j]["status"] for j in "0123"] == ["completed", "completed", "failed", "failed"]
    assert all(jobs[j]["trained"]["optimizer_steps"] > 0 and jobs[j]["trained"]["untrained"] == [] for j in "01")
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        f"error: 2 of 4 jobs failed: 2 ({ERROR}), 3 ({ERROR}); see {sweep / '2' / 'metrics.json'}; "
        f"transferlab report {sweep} lists them"
    )
