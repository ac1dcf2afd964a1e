"""Sweeps end to end: the experiment and Optuna presets compose, multiruns finish with a failed
job recorded, the parallel launcher gives overlapping jobs different devices, the Optuna preset
saves its best trial, and `transferlab report` turns a real sweep into a table and plots."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from omegaconf import OmegaConf, open_dict

from test_cli import run_cli
from transferlab import CONFIG_DIR
from transferlab.cli import main as report_main
from transferlab.sweep import optuna_best
from transferlab.sweep.pool_audit import read_records

# The smallest real runs: resnet10t from scratch weights on a few synthetic 32 px images, 1 epoch.
TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "data.source_args.train_per_class=20", "data.source_args.test_per_class=8", "data.val_per_class=4",
    "trainer.max_epochs=1", "trainer.accelerator=cpu",
]
PLOTS = ("acc_vs_size.png", "acc_vs_time.png", "params_by_strategy.png")
# Every strategy, from the config folder: compare_strategies sweeps them all.
# The image comparison runs every strategy that takes images (tfidf_lr reads texts) and learns from
# the labelled subset alone (pseudo_label, fixmatch and dann also read data.unlabeled: more data,
# another comparison: experiment=semi_supervised and experiment=domain_shift).
UNLABELED = {"pseudo_label", "fixmatch", "dann"}
STRATEGIES = {p.stem for p in (CONFIG_DIR / "strategy").glob("*.yaml")} - {"tfidf_lr"} - UNLABELED


def _sweep_dir(log_dir: Path, task: str) -> Path:
    (sweep,) = (log_dir / "logs" / task / "multiruns").iterdir()
    return sweep


def _jobs(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --- the presets compose (fast: no training) ----------------------------------------------------


@pytest.fixture
def configs():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield
    GlobalHydra.instance().clear()


def _expand(params: dict, command_line: list[str] = ()) -> list[list[str]]:
    """Every job's overrides, as Hydra's basic sweeper expands hydra.sweeper.params followed by
    the command line's overrides."""
    parser = OverridesParser.create()
    overrides = parser.parse_overrides([*(f"{k}={v}" for k, v in params.items()), *command_line])
    (jobs,) = BasicSweeper.split_arguments(overrides, None)
    return jobs


def _check_job(overrides: list[str]):
    """Compose one job as the sweep would and check what train.py validates before training."""
    from transferlab.config.checks import check_config
    from transferlab.engine.builders import make_strategy

    cfg = compose("train", overrides=overrides)
    for node in ("model", "data", "strategy", "optim"):
        OmegaConf.to_container(cfg[node], resolve=True)  # a broken interpolation fails here
    check_config(cfg)
    make_strategy(cfg)
    return cfg


def test_compare_strategies_preset_composes(configs):
    hydra_cfg = compose("train", overrides=["experiment=compare_strategies"], return_hydra_config=True)
    assert hydra_cfg.task_name == "compare_strategies" and "compare_strategies" in hydra_cfg.tags
    assert "${task_name}" in OmegaConf.to_container(hydra_cfg.hydra.sweep)["dir"]
    params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params)
    jobs = _expand(params)
    assert len(jobs) == len(STRATEGIES)
    seen = []
    for job in jobs:
        cfg = _check_job(["experiment=compare_strategies", *job])
        seen.append(cfg.strategy.name)
        assert cfg.model.name == "tf_efficientnet_lite0" and cfg.data.source == "fashion_mnist"
        # The sweep reproduces the single-run default: no per-run settings of its own.
        assert cfg.data.image_size == 96 and cfg.trainer.max_epochs == 15
    assert set(seen) == STRATEGIES and len(seen) == len(STRATEGIES)


def _covering(jobs: list[list[str]]) -> list[list[str]]:
    """Jobs that between them use every value of every swept key (composing all 48 is slow)."""
    seen: set[str] = set()
    out = []
    for job in jobs:
        if not seen.issuperset(job):
            out.append(job)
            seen.update(job)
    return out


def test_data_efficiency_preset_composes(configs):
    hydra_cfg = compose("train", overrides=["experiment=data_efficiency"], return_hydra_config=True)
    assert hydra_cfg.task_name == "data_efficiency" and "data_efficiency" in hydra_cfg.tags
    params = OmegaConf.to_container(hydra_cfg.hydra.sweeper.params)
    jobs = _expand(params)
    grid = {tuple(o.split("=", 1)[1] for o in job) for job in jobs}
    assert len(jobs) == len(grid) == 4 * 3 * 5
    assert {g[0] for g in grid} == {"10", "100", "1000", "null"}
    assert {g[1] for g in grid} == {"1", "2", "3"}
    assert {g[2] for g in grid} == {"scratch", "extract", "partial", "full", "gradual"}
    # The small sizes run first, the expensive "all" jobs last.
    assert jobs[0][0] == "data.samples_per_class=10" and jobs[-1][0] == "data.samples_per_class=null"
    composed = set()
    for job in _covering(jobs):
        cfg = _check_job(["experiment=data_efficiency", *job])
        composed.add((cfg.data.samples_per_class, cfg.seed, cfg.strategy.name))
        assert cfg.data.image_size == 64 and cfg.trainer.max_epochs == 5
        if cfg.strategy.name == "gradual":
            assert list(cfg.strategy.milestones) == [1, 2, 3]  # gradual's unfreezes fit the 5 epochs
    assert {c[0] for c in composed} == {10, 100, 1000, None} and {c[1] for c in composed} == {1, 2, 3}
    assert {c[2] for c in composed} == {"scratch", "extract", "partial", "full", "gradual"}
    # A command-line value replaces the preset's (make sweep-data ARGS="data.samples_per_class=10,100").
    cli = _expand(params, ["data.samples_per_class=10,100"])
    assert len(cli) == 2 * 3 * 5 and cli[0][0] == "data.samples_per_class=10"


def test_optuna_preset_composes(configs):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import CategoricalDistribution, LogUniformDistribution, UniformDistribution

    import transferlab.sweep.pool_callback  # noqa: F401  (registers the resolver launcher=parallel uses)

    cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.sampler._target_.endswith("TPESampler")
    assert sweeper.direction == "maximize" and sweeper.n_trials == 20 and sweeper.n_jobs == 1
    assert cfg.strategy.name == "partial" and cfg.task_name == "hparams_search"
    params = OmegaConf.to_container(sweeper.params)
    space, fixed = create_params_from_overrides([f"{k}={v}" for k, v in params.items()])
    assert not fixed
    assert space["strategy.lr"] == LogUniformDistribution(1e-4, 1e-2)
    assert space["strategy.decay"] == UniformDistribution(0.3, 1.0)
    assert space["model.head.dropout"] == UniformDistribution(0.0, 0.5)
    assert isinstance(space["strategy.unfreeze_top"], CategoricalDistribution)
    assert all(isinstance(k, int) and 1 <= k for k in space["strategy.unfreeze_top"].choices)
    # Every searched key exists in the job config: a typo would fail every trial at compose time.
    for key in space:
        assert OmegaConf.select(cfg, key, default="<missing>") != "<missing>", key
    # The largest unfreeze_top fits the default backbone (EfficientNet-Lite0 has 8 block groups).
    _check_job(["hparams_search=optuna", f"strategy.unfreeze_top={max(space['strategy.unfreeze_top'].choices)}"])
    assert cfg.hydra.callbacks.optuna_best._target_ == "transferlab.sweep.optuna_best.BestTrialCallback"

    par = compose("train", overrides=["hparams_search=optuna", "launcher=parallel",
                                      "hydra.callbacks.device_pool.devices=[a,b]"], return_hydra_config=True)
    assert par.hydra.sweeper.n_jobs == 2  # trials asked for at once = the pool's parallel jobs
    assert set(par.hydra.callbacks) == {"output_dir_guard", "sweep_summary", "device_pool", "optuna_best"}


# --- the best trial of an Optuna sweep (fast: a fake sweep dir) ---------------------------------


def _fake_job(sweep: Path, num: int, overrides: list[str], val: float | None, status: str = "completed") -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    (job / ".hydra" / "config.yaml").write_text(f"job: {num}\n")
    metrics = {"status": status, "val": {} if val is None else {"acc": val}, "test": {} if val is None else {"acc": val - 0.01}}
    (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def test_best_trial_is_found_saved_and_printed(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, ["hparams_search=optuna", "strategy.lr=0.003", "strategy.unfreeze_top=2", "x=a b"], 0.61)
    _fake_job(sweep, 1, ["hparams_search=optuna", "strategy.lr=1e-05", "strategy.unfreeze_top=3", "x=a b"], 0.74)
    _fake_job(sweep, 2, ["hparams_search=optuna", "strategy.lr=0.0001", "strategy.unfreeze_top=3", "x=a b"], None, "failed")
    (sweep / "optimization_results.yaml").write_text(
        "name: optuna\nbest_params:\n  strategy.lr: 1.0e-05\n  strategy.unfreeze_top: 3\nbest_value: 0.74\n"
    )
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    optuna_best.BestTrialCallback().on_multirun_end(config=cfg)

    best = yaml.safe_load((sweep / "best_trial.yaml").read_text())
    assert best["job"] == "1" and best["val_acc"] == 0.74 and best["test_acc"] == pytest.approx(0.73)
    assert best["best_params"] == {"strategy.lr": 1e-05, "strategy.unfreeze_top": 3}
    assert best["command"] == "python train.py hparams_search=optuna strategy.lr=1e-05 strategy.unfreeze_top=3 'x=a b'"
    assert (sweep / "best_config.yaml").read_text() == "job: 1\n"
    out = capsys.readouterr().out
    assert "Optuna best trial: val acc 0.74" in out and str(sweep / "1") in out and "rerun:  python train.py" in out


def test_best_trial_without_results_or_matching_job(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_job(sweep, 0, ["strategy.lr=0.5"], 0.5)
    cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    optuna_best.BestTrialCallback().on_multirun_end(config=cfg)  # not an Optuna sweep: nothing written
    assert not (sweep / "best_trial.yaml").exists()
    (sweep / "optimization_results.yaml").write_text("name: optuna\nbest_params: {strategy.lr: 0.25}\nbest_value: 0.9\n")
    best = optuna_best.save_best_trial(sweep)
    assert best["job"] is None and best["best_value"] == 0.9
    assert "no job dir" in optuna_best.format_best_trial(best, sweep)


# --- a failed trial must not stop an Optuna sweep --------------------------------------------------


def _failed_multirun_job_return(tmp_path: Path):
    """What train.py's task function returns for a job that fails in a multirun (no training:
    partial cannot unfreeze 99 of resnet10t's 5 groups, found while the run is assembled)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from transferlab.train import main

    cfg = compose("train", overrides=[*TINY, "strategy=partial", "strategy.unfreeze_top=99"], return_hydra_config=True)
    cfg.hydra.mode = RunMode.MULTIRUN
    cfg.hydra.runtime.output_dir = str(tmp_path / "job")
    HydraConfig.instance().set_config(cfg)
    try:
        job_cfg = cfg.copy()
        with open_dict(job_cfg):
            del job_cfg["hydra"]
        value = main(job_cfg)  # Hydra's passthrough: the task function itself
    finally:
        HydraConfig.instance().cfg = None
    metrics = json.loads((tmp_path / "job" / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "unfreeze_top=99" in metrics["error"]
    return value


def test_optuna_sweep_goes_on_after_a_failed_trial(tmp_path, configs):
    import optuna
    from hydra.core.utils import JobReturn, JobStatus
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl

    failed = _failed_multirun_job_return(tmp_path)

    class Launcher:  # trial 1 fails as train.py reports it; the others score 0.5, 0.52
        def launch(self, job_overrides, initial_job_idx):
            returns = []
            for i, overrides in enumerate(job_overrides):
                ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
                ret.return_value = failed if initial_job_idx + i == 1 else 0.5 + 0.01 * (initial_job_idx + i)
                returns.append(ret)
            return returns

    sweeper = OptunaSweeperImpl(
        optuna.samplers.RandomSampler(seed=0), "maximize", None, "t", 3, 1, 0.0, None, None,
        OmegaConf.create({"strategy.lr": "tag(log, interval(1e-4, 1e-2))"}),
    )
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.launcher, sweeper.hydra_context, sweeper.job_idx = Launcher(), object(), 0
    sweeper.sweep([])
    results = yaml.safe_load((tmp_path / "optimization_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(0.52)


# --- real multiruns (slow: subprocesses that train) ----------------------------------------------


@pytest.mark.slow
def test_multirun_with_a_failed_job_then_report(tmp_path, capsys):
    """Three jobs through the basic launcher; in 1 epoch gradual cannot reach its milestones [1, 3, 5]."""
    proc = run_cli("train.py", ["-m", *TINY, "strategy=extract,full,gradual"], tmp_path, check=False)
    assert proc.returncode == 1  # the sweep says it had a failed job (tests/test_sweep_summary.py)
    sweep = _sweep_dir(tmp_path, "train")
    jobs = _jobs(sweep)
    assert sorted(jobs) == ["0", "1", "2"]
    assert [jobs[j]["config"]["strategy"] for j in "012"] == ["extract", "full", "gradual"]
    assert jobs["0"]["status"] == jobs["1"]["status"] == "completed"
    assert all(jobs[j]["trained"]["optimizer_steps"] > 0 and jobs[j]["trained"]["untrained"] == [] and "acc" in jobs[j]["test"] for j in "01")
    failed = jobs["2"]
    assert failed["status"] == "failed" and failed["error"].startswith("ConfigError: strategy=gradual would start training block groups")
    assert "strategy=gradual" in failed["overrides"]
    assert "job failed: strategy=gradual would start" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr  # a user error is one line in a sweep too
    assert proc.stderr.strip().splitlines()[-1].startswith("error: 1 of 3 jobs failed: 2 (ConfigError: strategy=gradual would start")

    assert report_main(["report", str(sweep)]) == 0  # `transferlab report DIR`, in this process
    assert "3 jobs (2 completed, 1 failed)" in capsys.readouterr().out
    rows = _csv_rows(sweep / "results.csv")
    assert sorted(r["job"] for r in rows) == ["0", "1", "2"]
    assert {r["job"]: r["status"] for r in rows} == {"0": "completed", "1": "completed", "2": "failed"}
    for name in PLOTS:
        assert (sweep / name).stat().st_size > 1000
    md = (sweep / "results.md").read_text()
    assert "## Failed or unfinished jobs (1)" in md
    assert "**failed** `2`" in md and "after the last epoch" in md  # paths relative to the report


@pytest.mark.slow
def test_ray_launcher_runs_the_jobs_on_a_local_ray(tmp_path):
    # Optional extra (pip install -e .[sweep]): ray is a large install, so `make test` skips this.
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="launcher=ray needs pip install -e '.[sweep]'")
    ray_cpu = ["hydra.launcher.ray.init.num_cpus=2", "hydra.launcher.ray.remote.num_gpus=0", "hydra.launcher.ray.remote.num_cpus=1"]
    run_cli("train.py", ["-m", *TINY, "launcher=ray", *ray_cpu, "strategy=extract,partial"], tmp_path)
    jobs = _jobs(_sweep_dir(tmp_path, "train"))
    assert sorted(jobs) == ["0", "1"]
    assert [jobs[j]["config"]["strategy"] for j in "01"] == ["extract", "partial"]
    assert all(jobs[j]["status"] == "completed" and jobs[j]["trained"]["optimizer_steps"] > 0 and "acc" in jobs[j]["test"] for j in "01")


@pytest.mark.slow
def test_parallel_launcher_overlapping_jobs_hold_different_devices(tmp_path, monkeypatch):
    # CPU slots even where GPUs are visible: the pool then hands out cpu0 and cpu1. Two jobs that
    # train the backbone for 3 epochs hold their slots for seconds, far longer than the two
    # workers' start-up differs, so the holds overlap.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    proc = run_cli(
        "train.py",
        ["-m", "launcher=parallel", "hydra.callbacks.device_pool.cpu_slots=2", "hydra.callbacks.device_pool.poll_s=0.05",
         *TINY, "trainer.max_epochs=3", "strategy=full,partial"],
        tmp_path,
    )
    assert "n_jobs=2," in proc.stdout + proc.stderr  # sized from the pool
    sweep = _sweep_dir(tmp_path, "train")
    assert f"sweep: all 2 jobs completed: {sweep}" in proc.stdout  # read in the launching process
    jobs = _jobs(sweep)
    assert sorted(jobs) == ["0", "1"] and all(m["status"] == "completed" for m in jobs.values())
    recs = read_records(sweep / ".device_pool")
    assert len(recs) == 2 and all(r["status"] == "released" for r in recs)
    assert sorted(r["release"]["status"] for r in recs) == ["COMPLETED", "COMPLETED"]
    assert {r["job_dir"] for r in recs} == {str(sweep / "0"), str(sweep / "1")}
    a, b = recs
    overlap = min(a["released_at"], b["released_at"]) - max(a["acquired_at"], b["acquired_at"])
    assert overlap > 0, "the two jobs did not run at the same time"
    assert a["ids"] != b["ids"] and {*a["ids"], *b["ids"]} == {"cpu0", "cpu1"}
    assert a["pid"] != b["pid"]  # two joblib workers, neither of them the launching process


@pytest.mark.slow
def test_optuna_preset_two_trials_saves_the_best(tmp_path):
    proc = run_cli("train.py", ["-m", "hparams_search=optuna", "hydra.sweeper.n_trials=2", *TINY], tmp_path)
    sweep = _sweep_dir(tmp_path, "hparams_search")
    jobs = _jobs(sweep)
    assert sorted(jobs) == ["0", "1"] and all(m["status"] == "completed" for m in jobs.values())
    for m in jobs.values():
        c = m["config"]
        assert c["strategy"] == "partial"
        assert 1e-4 <= c["lr"] <= 1e-2 and 0.3 <= c["decay"] <= 1.0 and c["unfreeze_top"] in range(1, 6)

    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"strategy.lr", "strategy.decay", "model.head.dropout", "strategy.unfreeze_top"}
    best_val = max(m["val"]["acc"] for m in jobs.values())
    assert results["best_value"] == pytest.approx(best_val)

    best = yaml.safe_load((sweep / "best_trial.yaml").read_text())
    assert best["job"] in jobs and jobs[best["job"]]["val"]["acc"] == pytest.approx(best_val)
    assert best["test_acc"] == pytest.approx(jobs[best["job"]]["test"]["acc"])
    saved = OmegaConf.load(sweep / "best_config.yaml")
    assert math.isclose(saved.strategy.lr, results["best_params"]["strategy.lr"], rel_tol=1e-9)
    assert saved.model.head.dropout == pytest.approx(results["best_params"]["model.head.dropout"])
    assert best["command"].startswith("python train.py ") and "hparams_search=optuna" in best["command"]
    assert "Optuna best trial: val acc" in proc.stdout and f"config: {sweep / 'best_config.yaml'}" in proc.stdout
    assert f"sweep: all 2 jobs completed: {sweep}" in proc.stdout


def test_text_data_efficiency_preset_composes_every_job(configs):
    hydra_cfg = compose("train", overrides=["experiment=text_data_efficiency"], return_hydra_config=True)
    jobs = _expand(OmegaConf.to_container(hydra_cfg.hydra.sweeper.params))
    strategies = {"tfidf_lr", "scratch", "extract", "setfit", "partial", "full", "gradual", "lp_ft", "two_phase", "lora"}
    assert len(jobs) == 3 * 3 * len(strategies)
    seen = set()
    for job in jobs:
        cfg = _check_job(["experiment=text_data_efficiency", *job])
        seen.add(cfg.strategy.name)
        assert cfg.model.backbone == "hf" and cfg.data.source == "bbc_news" and cfg.trainer.max_epochs == 5
        if cfg.strategy.name == "extract":  # the experiment's own setting for one strategy
            assert cfg.strategy.solver == "lbfgs"
    assert seen == strategies


@pytest.mark.parametrize("preset, sizes, strategies", [
    ("semi_supervised", ["10", "100"], {"extract", "pseudo_label", "fixmatch"}),
    ("domain_shift", [None], {"full", "dann", "fixmatch"}),
])
def test_unlabelled_presets_compose_every_job(configs, preset, sizes, strategies):
    hydra_cfg = compose("train", overrides=[f"experiment={preset}"], return_hydra_config=True)
    jobs = _expand(OmegaConf.to_container(hydra_cfg.hydra.sweeper.params))
    assert len(jobs) == len(strategies) * 3 * (len(sizes) if sizes[0] else 1)
    for job in jobs:
        cfg = _check_job([f"experiment={preset}", *job])
        assert cfg.data.unlabeled in ("rest", "source") and cfg.trainer.max_steps == 300 and cfg.optim.label_smoothing == 0.0
        assert cfg.strategy.name in strategies
        if cfg.strategy.name == "extract":
            assert cfg.strategy.solver == "lbfgs"
        if cfg.strategy.name == "fixmatch":
            assert cfg.strategy.unlabeled_ratio == 3
