"""`transferlab report` on a fake sweep tree: CSV rows, mean ± std, bold best, verdicts, failures,
duplicates, provenance, portable paths, and plots checked for what they draw."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from transferlab.cli import main

SEED_OFFSET = {1: -0.012, 2: 0.004, 3: 0.008}
BASE = {"extract": 0.70, "partial": 0.80, "full": 0.78}
SIZE_BONUS = {10: 0.0, 100: 0.06, None: 0.10}
TRAINABLE = {"extract": 12_810, "partial": 1_200_000, "full": 3_380_000}
PLOTS = ("acc_vs_size.png", "acc_vs_time.png", "params_by_strategy.png")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _acc(strategy: str, size: int | None, seed: int) -> float:
    return round(BASE[strategy] + SIZE_BONUS[size] + SEED_OFFSET[seed], 4)


def _job(sweep: Path, num: int, overrides: list[str], metrics: dict | None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        metrics = {**metrics, "run_dir": str(job), "overrides": overrides}
        (job / "metrics.json").write_text(json.dumps(metrics))
    return job


def _metrics(model: str, strategy: str, size: int | None, seed: int, status: str = "completed",
             commit: str | None = None, dirty: bool = False) -> dict:
    acc = _acc(strategy, size, seed)
    failed = status == "failed"
    provenance = {"provenance": {"code": {"commit": commit, "dirty": dirty}, "versions": {"torch": "2.14.1"}}}
    return {
        **(provenance if commit else {}),  # records from before provenance have none
        "status": status,
        "error": "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" if failed else None,
        "test": {} if failed else {"acc": acc, "loss": round(1.2 - acc, 3)},
        "val": {} if failed else {"acc": acc + 0.01, "loss": round(1.1 - acc, 3)},
        "params": {"total": 3_380_000, "trainable": TRAINABLE[strategy]},
        "time": {"fit_s": 10.0 * (1 + TRAINABLE[strategy] / 1e6) * (size or 300) / 10,
                 "test_s": 3.0, "total_s": 13.0 * (1 + TRAINABLE[strategy] / 1e6) * (size or 300) / 10,
                 "train_images_per_s": 95.2},
        "config": {"model": model, "model_name": f"tf_{model}", "weights": "package:x",
                   "strategy": strategy, "data": "fashion_mnist", "samples_per_class": size,
                   "train_fraction": None, "train_size": 10 * size if size else 54_000,
                   "image_size": 128, "seed": seed, "max_epochs": 15},
        "some_future_key": {"nested": [1, 2]},
    }


@pytest.fixture
def sweeps(tmp_path: Path) -> tuple[Path, Path]:
    """Two multirun dirs as Hydra lays them out (job dirs 0, 1, ... with .hydra/)."""
    first = tmp_path / "logs" / "train" / "multiruns" / "2026-01-01_10-00-00"
    num = 0
    for strategy in BASE:
        for size in (10, 100):
            for seed in (1, 2, 3):
                _job(first, num, [f"strategy={strategy}", f"data.samples_per_class={size}", f"seed={seed}"],
                     _metrics("efficientnet_lite0", strategy, size, seed, commit=COMMIT))
                num += 1
    _job(first, num, ["strategy=full", "data.samples_per_class=100", "seed=4"],
         _metrics("efficientnet_lite0", "full", 100, 3, status="failed"))
    _job(first, num + 1, ["strategy=partial", "data.samples_per_class=10", "seed=9"], None)
    (first / "multirun.yaml").write_text("hydra: {}\n")

    second = tmp_path / "logs" / "train" / "multiruns" / "2026-01-02_09-00-00"
    num = 0
    for strategy in ("extract", "full"):
        for size in (10, None):
            for seed in (1, 2):
                _job(second, num, ["model=resnet18", f"strategy={strategy}",
                                   f"data.samples_per_class={'null' if size is None else size}", f"seed={seed}"],
                     _metrics("resnet18", strategy, size, seed))
                num += 1
    broken = _job(second, num, ["model=resnet18", "strategy=lora", "seed=1"], None)
    (broken / "metrics.json").write_text('{"status": "completed", "test": {"acc"')  # cut short
    return first, second


def test_report_from_two_sweeps(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    first, second = sweeps
    out = tmp_path / "report"
    assert main(["report", str(first), str(second), "--out", str(out)]) == 0

    # One CSV row per job dir, flat columns.
    df = pd.read_csv(out / "results.csv")
    assert len(df) == 18 + 2 + 8 + 1
    assert df["status"].value_counts().to_dict() == {"completed": 26, "failed": 2, "unfinished": 1}
    assert df.groupby("sweep")["job"].apply(lambda s: s.is_unique).all()
    for col in ("model", "strategy", "samples_per_class", "seed", "test.acc", "val.acc",
                "params.trainable", "time.total_s", "some_future_key.nested", "error", "overrides"):
        assert col in df.columns, col
    row = df[(df["model"] == "efficientnet_lite0") & (df["strategy"] == "partial")
             & (df["samples_per_class"] == 100) & (df["seed"] == 2)]
    assert row["test.acc"].tolist() == [_acc("partial", 100, 2)]
    assert df[df["model"] == "resnet18"]["samples_per_class"].isna().sum() == 4 + 1

    md = (out / "results.md").read_text()

    def cell(strategy: str, size: int | None, seeds=(1, 2, 3)) -> str:
        accs = [100 * _acc(strategy, size, s) for s in seeds]
        return f"{statistics.mean(accs):.2f} ± {statistics.stdev(accs):.2f} (n={len(accs)})"

    # Best strategy at 100 images/class is partial, bold; the others are not.
    best = cell("partial", 100)
    assert best == "86.00 ± 1.06 (n=3)"
    assert f"**{best}**" in md
    for other in (cell("full", 100), cell("extract", 100), cell("extract", 10)):
        assert other in md and f"**{other}**" not in md
    assert f"**{cell('partial', 10)}**" in md
    # resnet18 "all" (samples_per_class null) is its own size; full wins there.
    assert f"**{cell('full', None, seeds=(1, 2))}**" in md
    assert "| all |" in md
    # The long table marks the best strategy too.
    assert "| efficientnet_lite0 | fashion_mnist | 100 | **partial** | 1,2,3 | **86.00 ± 1.06** |" in md

    # Failed and unfinished jobs, with where they are and why.
    # Paths are relative to the report, so the committed report holds none of this machine's.
    failures = md.split("## Failed or unfinished jobs (3)")[1]
    assert f"`{os.path.relpath(first / '18', out)}`" in failures
    assert "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB" in failures
    assert f"`{os.path.relpath(first / '19', out)}` (`strategy=partial data.samples_per_class=10 seed=9`)" in failures
    assert "no metrics.json" in failures
    assert f"`{os.path.relpath(second / '8', out)}`" in failures and "unreadable metrics.json" in failures

    # No path of this machine anywhere in what is written; the paths there lead back to the runs.
    for name in ("results.csv", "results.md", "comparisons.csv"):
        assert str(tmp_path) not in (out / name).read_text(), name
    assert md.startswith(f"# Results\n\nSources: `{os.path.relpath(first, out)}`, `{os.path.relpath(second, out)}`\n")
    assert df["sweep"].map(lambda p: not os.path.isabs(p)).all()
    assert ((out / row["job_dir"].iloc[0]).resolve() == (out / row["run_dir"].iloc[0]).resolve()
            == (out / row["sweep"].iloc[0] / str(row["job"].iloc[0])).resolve())
    assert (out / row["job_dir"].iloc[0] / "metrics.json").is_file()

    # The question answered: per (model, data, size) the winner, and whether beyond noise. The
    # fixture's seeds move every strategy alike, so the paired difference has no spread.
    effnet = md.split("### efficientnet_lite0 on fashion_mnist")[1].split("###")[0]
    assert "- 10 images/class: partial beats full by +2.00 points (95 % CI +2.00 to +2.00, 3 paired seeds)." in effnet
    assert "- 100 images/class: partial beats full by +2.00 points (95 % CI +2.00 to +2.00, 3 paired seeds)." in effnet
    resnet = md.split("### resnet18 on fashion_mnist")[1].split("## All groups")[0]
    assert "- all training images: full beats extract by +8.00 points (95 % CI +8.00 to +8.00, 2 paired seeds)." in resnet
    comparisons = pd.read_csv(out / "comparisons.csv", dtype={"size": str})
    assert len(comparisons) == 4
    c = comparisons.set_index(["model", "size"]).loc[("efficientnet_lite0", "100")]
    assert (c["best"], c["runner_up"], c["n_paired"], c["paired_seeds"]) == ("partial", "full", 3, "1,2,3")
    assert c["diff_mean"] == pytest.approx(2.0) and c["ci_low"] == pytest.approx(2.0) and bool(c["separable"])
    assert c["best_mean"] == pytest.approx(86.0) and c["runner_up_mean"] == pytest.approx(84.0)

    # Which code each table's runs came from; records from before provenance say so.
    assert "Code: `0123456+dirty`" not in effnet and "Code: `0123456` (all 18 runs)." in effnet
    assert "Code: `unknown` (all 8 runs)." in resnet
    assert "| 3.38M | 3.38M |" in md and md.count("| 0123456 |") == 6 and md.count("| unknown |") == 4
    assert set(df[df["status"] == "completed"].groupby("model")["code"].unique().map(tuple)) == {("0123456",), ("unknown",)}

    for name in PLOTS:
        path = out / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as im:
            im.verify()
        with Image.open(path) as im:
            assert im.size[0] > 300 and im.size[1] > 200


def test_default_out_is_first_dir_and_errors(sweeps: tuple[Path, Path], tmp_path: Path, capsys) -> None:
    first, _ = sweeps
    assert main(["report", str(first)]) == 0
    assert {"results.csv", "results.md", *PLOTS} <= {p.name for p in first.iterdir()}
    # Re-running over a dir that now holds the report still finds the same jobs.
    assert main(["report", str(first)]) == 0
    assert len(pd.read_csv(first / "results.csv")) == 20
    assert "20 jobs" in capsys.readouterr().out

    capsys.readouterr()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2  # a user error, as elsewhere in transferlab
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no runs under" in err and "pass the run or multirun directory" in err
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert main([]) == 2


def test_only_failures_still_writes_everything(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["strategy=full"], _metrics("resnet18", "full", 10, 1, status="failed"))
    _job(sweep, 1, ["strategy=extract"], None)
    assert main(["report", str(sweep)]) == 0
    md = (sweep / "results.md").read_text()
    assert "No completed runs yet." in md and "## Failed or unfinished jobs (2)" in md
    assert all((sweep / name).stat().st_size > 0 for name in PLOTS)


def test_a_job_reused_by_auto_resume_counts_once(tmp_path: Path) -> None:
    from transferlab.report import collect

    old = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    new = tmp_path / "multiruns" / "2026-01-02_10-00-00"
    done = _job(old, 0, ["strategy=extract", "seed=1"], _metrics("lite0", "extract", 10, 1))
    reused = {**json.loads((done / "metrics.json").read_text()), "reused_from": str(done)}
    _job(new, 0, ["strategy=extract", "seed=1"], reused)
    _job(new, 1, ["strategy=full", "seed=1"], _metrics("lite0", "full", 10, 1))
    assert len(collect([new])) == 2  # the relaunched sweep alone is complete
    both = collect([old, new])
    assert len(both) == 3 - 1 and sorted(both["strategy"]) == ["extract", "full"]


def test_lbfgs_probe_is_its_own_strategy_row(tmp_path: Path) -> None:
    from transferlab.report import collect

    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    for num, solver in enumerate(("sgd", "lbfgs")):
        m = _metrics("lite0", "extract", 10, 1)
        m["config"]["solver"] = solver
        _job(sweep, num, ["strategy=extract", f"strategy.solver={solver}"], m)
    assert sorted(collect([sweep])["strategy"]) == ["extract", "extract (lbfgs)"]
