"""A run never overwrites an earlier one: a hydra.run.dir or hydra.sweep.dir that already holds a
run is refused with one line, and the earlier run's files stay byte for byte as they were.
Default (timestamped) dirs, ckpt_path resumes and auto_resume relaunches write new dirs and go on."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from test_cli import run_cli
from test_sweeps import TINY, _fake_job
from transferlab.sweep.dir_guard import OutputDirGuard, run_files_in


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under root with the hash of its bytes (and every folder, as "dir")."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


def _error_line(proc) -> str:
    """The launch ended with exit status 2 and one `error:` line, last on stderr, no traceback."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr and [ln for ln in lines if ln.startswith("error: ")] == [lines[-1]]
    return lines[-1]


def _config(run_dir: Path | str = "unused", sweep_dir: Path | str = "unused"):
    return OmegaConf.create({"hydra": {"run": {"dir": str(run_dir)}, "sweep": {"dir": str(sweep_dir)}}})


def test_a_used_run_dir_is_refused_before_anything_is_written(tmp_path, capsys):
    guard = OutputDirGuard()
    guard.on_run_start(config=_config(tmp_path / "new"))  # a dir that does not exist yet
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "train.log").write_text("")
    guard.on_run_start(config=_config(tmp_path / "new"))  # holds no run
    for written, marker in [("metrics.json",) * 2, (".hydra/config.yaml",) * 2, ("checkpoints/last.ckpt", "checkpoints")]:
        used = tmp_path / marker.replace("/", "_")
        (used / written).parent.mkdir(parents=True)
        (used / written).write_text("{}")
        assert run_files_in(used) == [marker]
        with pytest.raises(SystemExit) as exit_:
            guard.on_run_start(config=_config(used))
        assert exit_.value.code == 2
        assert capsys.readouterr().err == (
            f"error: hydra.run.dir={used} already holds a run ({marker}), which this run would overwrite: pass "
            f"another hydra.run.dir (or leave it unset for a new timestamped dir), or delete {used} to run there again\n"
        )


def test_ranks_that_lightning_starts_into_the_first_ranks_dir_go_on(tmp_path, monkeypatch):
    (tmp_path / "metrics.json").write_text("{}")
    monkeypatch.setenv("LOCAL_RANK", "1")  # strategy=ddp reruns the command line with its hydra.run.dir
    OutputDirGuard().on_run_start(config=_config(tmp_path))
    monkeypatch.setenv("LOCAL_RANK", "0")  # the first rank itself is checked
    with pytest.raises(SystemExit):
        OutputDirGuard().on_run_start(config=_config(tmp_path))


def test_a_sweep_dir_with_job_dirs_is_refused(tmp_path, capsys):
    guard = OutputDirGuard()
    sweep = tmp_path / "sweep"
    guard.on_multirun_start(config=_config(sweep_dir=sweep))
    (sweep / ".device_pool").mkdir(parents=True)  # what a sweep leaves before its first job: no job yet
    (sweep / "multirun.yaml").write_text("{}")
    guard.on_multirun_start(config=_config(sweep_dir=sweep))
    _fake_job(sweep, 0, ["seed=0"], 0.5)
    _fake_job(sweep, 1, ["seed=1"], 0.5)
    with pytest.raises(SystemExit) as exit_:
        guard.on_multirun_start(config=_config(sweep_dir=sweep))
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith(f"error: hydra.sweep.dir={sweep} already holds 2 job dirs of an earlier sweep")


@pytest.mark.slow
def test_a_second_run_in_the_same_run_dir_is_refused_and_the_first_is_untouched(tmp_path):
    run_dir = tmp_path / "my-run"
    run_cli("train.py", [*TINY, "strategy=full", f"hydra.run.dir={run_dir}"], tmp_path)
    assert run_files_in(run_dir) == ["metrics.json", ".hydra/config.yaml", "checkpoints"]
    before = _snapshot(run_dir)
    assert "csv/metrics.csv" in before

    proc = run_cli("train.py", [*TINY, "strategy=extract", "seed=7", f"hydra.run.dir={run_dir}"], tmp_path, check=False)
    line = _error_line(proc)
    assert line.startswith(f"error: hydra.run.dir={run_dir} already holds a run (metrics.json, .hydra/config.yaml, checkpoints)")
    assert line.endswith(f"or delete {run_dir} to run there again")
    assert _snapshot(run_dir) == before


@pytest.mark.slow
def test_a_second_sweep_in_the_same_sweep_dir_is_refused_and_the_first_is_untouched(tmp_path):
    sweep = tmp_path / "my-sweep"
    _fake_job(sweep, 0, ["strategy=extract"], 0.5)
    _fake_job(sweep, 1, ["strategy=full"], 0.6)
    before = _snapshot(sweep)

    proc = run_cli("train.py", ["-m", *TINY, "strategy=extract,full", f"hydra.sweep.dir={sweep}"], tmp_path, check=False)
    assert _error_line(proc).startswith(f"error: hydra.sweep.dir={sweep} already holds 2 job dirs of an earlier sweep")
    assert _snapshot(sweep) == before


@pytest.mark.slow
def test_a_relaunched_sweep_writes_a_new_dir_and_reuses_the_finished_jobs(tmp_path):
    # ckpt_path resumes write new run dirs the same way: tests/test_resume.py.
    sweep_args = ["-m", *TINY, "task_name=swept", "auto_resume=true", "strategy=extract", "seed=1,2"]
    run_cli("train.py", sweep_args, tmp_path)
    again = run_cli("train.py", sweep_args, tmp_path)  # the relaunch of a sweep that finished
    sweeps = sorted((tmp_path / "logs" / "swept" / "multiruns").iterdir())
    assert len(sweeps) == 2
    assert f"sweep: all 2 jobs completed (2 reused from an earlier sweep): {sweeps[1]}" in again.stdout
