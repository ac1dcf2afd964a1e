"""`transferlab report` on a fake sweep tree: CSV rows, mean ± std, bold best, verdicts, failures,
duplicates, provenance, portable paths, and plots checked for what they draw."""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from transferlab.cli import main
from transferlab.report import write_report

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


# --- verdicts: the paired comparison to the runner-up -------------------------------------------

T_975_DF2 = 4.302652729911275  # from a t table: the 97.5th percentile with 2 degrees of freedom


def test_paired_difference_clear_win() -> None:
    from transferlab.report.stats import paired_difference, verdict

    partial = {"1": 86.1, "2": 86.9, "3": 87.4}
    full = {"1": 85.0, "2": 86.2, "3": 86.5}
    diff = paired_difference(partial, full)
    d = [1.1, 0.7, 0.9]
    half = T_975_DF2 * statistics.stdev(d) / math.sqrt(3)
    assert diff.seeds == ("1", "2", "3") and diff.n == 3
    assert diff.mean == pytest.approx(0.9) and (diff.low, diff.high) == pytest.approx((0.9 - half, 0.9 + half))
    assert diff.separable
    assert verdict("partial", "full", diff) == "partial beats full by +0.90 points (95 % CI +0.40 to +1.40, 3 paired seeds)"


def test_paired_difference_tie() -> None:
    from transferlab.report.stats import paired_difference, verdict

    diff = paired_difference({"1": 86.0, "2": 85.0, "3": 87.0}, {"1": 85.5, "2": 85.8, "3": 85.8})
    half = T_975_DF2 * statistics.stdev([0.5, -0.8, 1.2]) / math.sqrt(3)
    assert diff.mean == pytest.approx(0.3) and (diff.low, diff.high) == pytest.approx((0.3 - half, 0.3 + half))
    assert not diff.separable
    assert verdict("partial", "full", diff) == "partial and full are not separable with 3 seeds (+0.30, 95 % CI −2.22 to +2.82)"


def test_verdict_wording() -> None:
    from transferlab.report.stats import PairedDifference, verdict

    three = ("1", "2", "3")
    assert verdict("partial", "full", PairedDifference(three, 0.91, 0.21, 1.61)) == \
        "partial beats full by +0.91 points (95 % CI +0.21 to +1.61, 3 paired seeds)"
    assert verdict("partial", "full", PairedDifference(three, 0.30, -0.80, 1.40)) == \
        "partial and full are not separable with 3 seeds (+0.30, 95 % CI −0.80 to +1.40)"
    # The higher mean over all seeds lost on the seeds both ran: the winner there is named.
    assert verdict("partial", "full", PairedDifference(three, -1.0, -1.5, -0.5)) == \
        "full beats partial by +1.00 points (95 % CI +0.50 to +1.50, 3 paired seeds)"


def test_one_seed_and_unpaired_seeds_are_not_separable() -> None:
    from transferlab.report.stats import paired_difference, verdict

    one = paired_difference({"1": 80.0}, {"1": 79.5, "2": 81.0})
    assert one.seeds == ("1",) and one.mean == pytest.approx(0.5) and math.isnan(one.low) and not one.separable
    assert verdict("partial", "full", one) == "partial and full are not separable: 1 seed (+0.50)"

    none = paired_difference({"1": 80.0, "2": 81.0}, {"3": 70.0, "4": 71.0})
    assert none.n == 0 and math.isnan(none.mean) and not none.separable
    assert verdict("partial", "full", none) == "partial and full are not separable: no seed ran for both"

    # Only the shared seeds pair, however far apart the others are.
    some = paired_difference({"1": 99.0, "2": 80.0, "3": 81.0}, {"2": 79.0, "3": 80.0, "4": 10.0})
    assert some.seeds == ("2", "3") and some.mean == pytest.approx(1.0) and some.low == pytest.approx(1.0)


def _sweep_of(sweep: Path, runs: list[tuple[str, int, int, float]]) -> None:
    """Jobs (strategy, images per class, seed, test accuracy) of one model in one multirun dir."""
    for num, (strategy, size, seed, acc) in enumerate(runs):
        m = _metrics("lite0", strategy, 10, 1)
        m["config"].update(samples_per_class=size, train_size=10 * size, seed=seed)
        m["test"]["acc"] = acc
        _job(sweep, num, [f"strategy={strategy}", f"data.samples_per_class={size}", f"seed={seed}"], m)


def test_report_names_a_verdict_per_size(tmp_path: Path) -> None:
    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    _sweep_of(sweep, [
        *[("partial", 10, s, a) for s, a in ((1, 0.861), (2, 0.869), (3, 0.874))],  # a clear win
        *[("full", 10, s, a) for s, a in ((1, 0.850), (2, 0.862), (3, 0.865))],
        *[("partial", 100, s, a) for s, a in ((1, 0.860), (2, 0.850), (3, 0.870))],  # a tie
        *[("full", 100, s, a) for s, a in ((1, 0.855), (2, 0.858), (3, 0.858))],
        ("partial", 1000, 1, 0.90), ("full", 1000, 1, 0.895),  # one seed
        ("partial", 50, 1, 0.90), ("partial", 50, 2, 0.91), ("full", 50, 3, 0.80), ("full", 50, 4, 0.81),  # unpaired
        ("full", 5, 1, 0.50),  # nothing to compare with
    ])
    report = write_report([sweep])
    md = (sweep / "results.md").read_text()
    assert "- 10 images/class: partial beats full by +0.90 points (95 % CI +0.40 to +1.40, 3 paired seeds)." in md
    assert "- 100 images/class: partial and full are not separable with 3 seeds (+0.30, 95 % CI −2.22 to +2.82)." in md
    assert "- 1000 images/class: partial and full are not separable: 1 seed (+0.50)." in md
    assert "- 50 images/class: partial and full are not separable: no seed ran for both." in md
    assert "- 5 images/class: only full ran." in md
    # Sizes in order, and the same answers machine-readable.
    assert [c.size for c in report.comparisons.itertuples()] == ["5", "10", "50", "100", "1000"]
    table = pd.read_csv(sweep / "comparisons.csv", dtype={"size": str}).set_index("size")
    assert table["separable"].to_dict() == {"5": False, "10": True, "50": False, "100": False, "1000": False}
    assert table["n_paired"].to_dict() == {"5": 0, "10": 3, "50": 0, "100": 3, "1000": 1}
    assert table.loc["100", "ci_low"] == pytest.approx(0.3 - T_975_DF2 * statistics.stdev([0.5, -0.8, 1.2]) / math.sqrt(3))


# --- never average different experiments, never count a seed twice ------------------------------


def test_a_run_resumed_again_counts_once(tmp_path: Path) -> None:
    """A finished run resumed from its last checkpoint finishes again with the same numbers: one seed."""
    runs = tmp_path / "logs" / "train" / "runs"
    first = _job(runs, "2026-01-01_10-00-00-000001", ["strategy=partial", "seed=1"], _metrics("lite0", "partial", 10, 1))
    again = _job(runs, "2026-01-02_10-00-00-000002", ["strategy=partial", "seed=1"],
                 {**_metrics("lite0", "partial", 10, 1), "resumed_from": str(first / "checkpoints" / "last.ckpt")})
    out = tmp_path / "report"
    assert main(["report", str(runs), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    acc = f"{100 * _acc('partial', 10, 1):.2f}"
    assert f"| 10 | {acc} (n=1) |" in md
    assert f"| lite0 | fashion_mnist | 10 | partial | 1 | {acc} |" in md
    assert "(n=2)" not in md and "± 0.00" not in md
    df = pd.read_csv(out / "results.csv")
    assert df.set_index("job")["status"].to_dict() == {first.name: "duplicate", again.name: "completed"}
    assert df.set_index("job").loc[first.name, "duplicate_of"] == os.path.relpath(again, out)
    assert df.set_index("job").loc[again.name, "resumed_from"] == os.path.relpath(first / "checkpoints" / "last.ckpt", out)
    dups = md.split("## Duplicates, not counted (1)")[1].split("##")[0]
    assert (f"- `{os.path.relpath(first, out)}` (lite0 · fashion_mnist · 10 · partial, seed 1): "
            f"repeats `{os.path.relpath(again, out)}`") in dups
    assert "## Failed or unfinished jobs (0)" in md


def test_the_newest_run_of_a_seed_counts_by_run_dir_time_then_mtime(tmp_path: Path) -> None:
    from transferlab.report import collect

    def run(parent: Path, name: str, acc: float, mtime: float) -> Path:
        m = _metrics("lite0", "full", 10, 1)
        m["test"]["acc"] = acc
        job = _job(parent, name, ["strategy=full", "seed=1"], m)
        os.utime(job / "metrics.json", (mtime, mtime))
        return job

    # Run dir names say which started last, whatever the files' times say.
    named = tmp_path / "named"
    run(named, "2026-03-01_09-00-00-000000", 0.70, mtime=2_000_000_000)
    newest = run(named, "2026-03-02_09-00-00-000000", 0.75, mtime=1_000_000_000)
    jobs = collect([named])
    assert jobs.set_index("job")["status"].to_dict() == {"2026-03-01_09-00-00-000000": "duplicate",
                                                          newest.name: "completed"}
    # Dirs not named by a time (copied, or jobs of one multirun): the newer metrics.json counts.
    plain = tmp_path / "plain"
    run(plain, "a", 0.70, mtime=2_000_000_000)
    run(plain, "b", 0.75, mtime=1_000_000_000)
    assert collect([plain]).set_index("job")["status"].to_dict() == {"a": "completed", "b": "duplicate"}
    sweep = tmp_path / "multiruns" / "2026-03-01_09-00-00-000000"
    run(sweep, "0", 0.70, mtime=1_000_000_000)
    run(sweep, "1", 0.75, mtime=2_000_000_000)
    report = write_report([sweep])
    assert report.counts() == {"completed": 1, "duplicate": 1}
    assert report.groups["n"].tolist() == [1] and report.groups["test_mean"].tolist() == pytest.approx([75.0])


def test_runs_that_differ_in_a_setting_are_different_rows(tmp_path: Path) -> None:
    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    jobs = []
    for strategy, setting, seeds in (("partial", {"lr": 0.001}, (1, 2)), ("partial", {"lr": 0.01}, (1, 2)),
                                     ("lora", {"strategy_args": {"r": 4, "alpha": 8}}, (1,)),
                                     ("lora", {"strategy_args": {"r": 8, "alpha": 8}}, (1,)),
                                     ("extract", {"variant": "lbfgs", "max_epochs": 5}, (1,)),
                                     ("extract", {"variant": "lbfgs", "max_epochs": 10}, (1,)),
                                     ("full", {"lr": 0.001}, (1, 2))):
        for seed in seeds:
            m = _metrics("lite0", "full" if strategy == "lora" else strategy, 10, seed)
            m["config"].update(strategy=strategy, **setting)
            m["test"]["acc"] = 0.5 + 0.01 * len(jobs)
            jobs.append(m)
    failed = _metrics("lite0", "partial", 10, 1, status="failed")
    failed["config"]["lr"] = 0.1  # a failed job splits nothing: it is in no average
    for num, m in enumerate([*jobs, failed]):
        _job(sweep, num, [f"strategy={m['config']['strategy']}", f"seed={m['config']['seed']}"], m)

    report = write_report([sweep])
    assert report.counts() == {"completed": 10, "failed": 1}  # same seed, other setting: no duplicate
    assert report.groups.set_index("strategy")["n"].to_dict() == {
        "extract (lbfgs, max_epochs=10)": 1, "extract (lbfgs, max_epochs=5)": 1, "full": 2,
        "lora (r=4)": 1, "lora (r=8)": 1, "partial (lr=0.001)": 2, "partial (lr=0.01)": 2}
    means = report.groups.set_index("strategy")["test_mean"]
    assert means["partial (lr=0.001)"] == pytest.approx(50.5) and means["partial (lr=0.01)"] == pytest.approx(52.5)
    md = (sweep / "results.md").read_text()
    assert "| lite0 | fashion_mnist | 10 | partial (lr=0.001) | 1,2 | 50.50 ± 0.71 |" in md
    df = pd.read_csv(sweep / "results.csv")
    assert df[df["status"] == "failed"]["strategy"].tolist() == ["partial"]
    assert set(df["strategy_name"]) == {"partial", "lora", "extract", "full"}


def test_variant_label_is_generic(tmp_path: Path) -> None:
    from transferlab.report import collect

    sweep = tmp_path / "sweep"
    m = {**_metrics("lite0", "full", 10, 1), "schema": 2}
    m["config"].update(strategy="lp_ft", variant="two_stage")
    _job(sweep, 0, ["strategy=lp_ft"], m)
    assert collect([sweep])["strategy"].tolist() == ["lp_ft (two_stage)"]


# --- plots: what they draw ----------------------------------------------------------------------


def _panels(fig) -> dict:
    return {ax.get_title(): ax for ax in fig.axes if ax.get_visible() and ax.get_title()}


def test_plots_draw_the_group_means(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    from matplotlib.container import BarContainer, ErrorbarContainer

    first, second = sweeps
    report = write_report([first, second], tmp_path / "report")

    def expected(strategy: str, size: int | None, seeds) -> tuple[float, float]:
        accs = [100 * _acc(strategy, size, s) for s in seeds]
        return statistics.mean(accs), statistics.stdev(accs)

    # Accuracy vs size: one line per strategy through its group means, std as error bars.
    panels = _panels(report.figures["acc_vs_size"])
    assert set(panels) == {"efficientnet_lite0 · fashion_mnist", "resnet18 · fashion_mnist"}
    cases = {"efficientnet_lite0 · fashion_mnist": (BASE, {10: 10, 100: 100}, (1, 2, 3)),
             # "all": 54,000 images over the 10 classes its 10-per-class runs show
             "resnet18 · fashion_mnist": (("extract", "full"), {10: 10, None: 5400}, (1, 2))}
    for title, (strategies, sizes, seeds) in cases.items():
        lines = {c.get_label(): c for c in panels[title].containers if isinstance(c, ErrorbarContainer)}
        assert sorted(lines) == sorted(strategies)
        for strategy, c in lines.items():
            points = [(x, *expected(strategy, size, seeds)) for size, x in sizes.items()]
            assert c.lines[0].get_xydata() == pytest.approx(np.array([[x, m] for x, m, _ in points]))
            bars = np.array(c.lines[2][0].get_segments())
            assert bars == pytest.approx(np.array([[[x, m - s], [x, m + s]] for x, m, s in points]))
    ticks = [t.get_text() for t in panels["resnet18 · fashion_mnist"].get_xticklabels()]
    assert ticks == ["10", "all\n(≈5400)"]

    # Accuracy vs time: a point per counted run, a marker per group mean.
    ax = _panels(report.figures["acc_vs_time"])["efficientnet_lite0 · fashion_mnist  (labels: images/class)"]
    runs = {c.get_label(): c for c in ax.collections if c.get_label().endswith(" runs")}
    assert sorted(runs) == [f"{s} runs" for s in sorted(BASE)]
    for strategy in BASE:
        drawn = np.array(sorted(map(tuple, runs[f"{strategy} runs"].get_offsets().tolist())))
        recorded = sorted((m["time"]["total_s"], 100 * m["test"]["acc"])
                          for m in (_metrics("e", strategy, size, s) for size in (10, 100) for s in (1, 2, 3)))
        assert drawn == pytest.approx(np.array(recorded))
        marker = next(c for c in ax.containers if c.get_label() == strategy)
        means = [(statistics.mean(_metrics("e", strategy, size, s)["time"]["total_s"] for s in (1, 2, 3)),
                  expected(strategy, size, (1, 2, 3))[0]) for size in (10, 100)]
        assert marker.lines[0].get_xydata() == pytest.approx(np.array(sorted(means)))

    # Trainable parameters: a bar per (strategy, model) at the runs' median.
    ax = report.figures["params_by_strategy"].axes[0]
    strategies = [t.get_text() for t in ax.get_xticklabels()]
    assert strategies == sorted(BASE)
    bars = {c.get_label(): c for c in ax.containers if isinstance(c, BarContainer)}
    assert sorted(bars) == ["efficientnet_lite0", "resnet18"]
    assert [b.get_height() for b in bars["efficientnet_lite0"]] == [TRAINABLE[s] for s in strategies]
    assert [b.get_height() for b in bars["resnet18"]] == [TRAINABLE[s] for s in ("extract", "full")]


# --- bad input ----------------------------------------------------------------------------------


def test_bad_input_is_one_line_or_a_failed_row(tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "README.txt").write_text("not a run\n")
    assert main(["report", str(notes)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"no runs under {notes}" in err and "logs/train/multiruns/<date>" in err

    sweep = tmp_path / "sweep"
    _job(sweep, 0, ["strategy=full", "seed=1"], _metrics("lite0", "full", 10, 1))
    _job(sweep, 1, ["strategy=full", "seed=2"], None)
    (sweep / "1" / "metrics.json").write_text("[1, 2]")
    _job(sweep, 2, ["strategy=partial", "seed=3"], None)
    (sweep / "2" / "metrics.json").write_text('{"schema": "two", "status": "completed"}')
    _job(sweep, 3, ["strategy=partial", "seed=4"], None)
    (sweep / "3" / "metrics.json").write_bytes(b"\xff\xfe")
    assert main(["report", str(sweep)]) == 0
    df = pd.read_csv(sweep / "results.csv").set_index("job")
    assert df["status"].to_dict() == {0: "completed", 1: "failed", 2: "failed", 3: "failed"}
    assert df.loc[1, "error"] == "unreadable metrics.json: expected a JSON object, got list"
    assert df.loc[2, "error"].startswith("unreadable metrics.json: ") and df.loc[2, "strategy"] == "partial"
    assert df.loc[3, "error"].startswith("unreadable metrics.json: ") and df.loc[3, "seed"] == 4
    assert str(tmp_path) not in (sweep / "results.md").read_text()

    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["report", str(sweep), "--out", str(blocker / "report")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "pass --out <a folder you can write>" in err


def test_code_commits_are_counted_and_record_paths_are_relative(tmp_path: Path) -> None:
    sweep = tmp_path / "logs" / "multiruns" / "2026-01-01_10-00-00"
    cache = tmp_path / ".cache" / "features"
    for num, (seed, commit, dirty) in enumerate(((1, "a" * 40, False), (2, "a" * 40, False), (3, "b" * 40, True))):
        m = _metrics("lite0", "full", 10, seed, commit=commit, dirty=dirty)
        job = sweep / str(num)
        m.update(best_checkpoint=str(job / "checkpoints" / "epoch_003.ckpt"), feature_cache={"dir": str(cache), "hits": 3})
        _job(sweep, num, ["strategy=full", f"seed={seed}"], m)
    _job(sweep, 3, ["strategy=extract", "seed=1"], _metrics("lite0", "extract", 10, 1))  # no provenance recorded
    out = tmp_path / "docs" / "results"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert "Code: `aaaaaaa` (2 runs), `bbbbbbb+dirty` (1 run), `unknown` (1 run)." in md
    assert "| 3.38M | 3.38M | 56.9 ± 0.0 | aaaaaaa (2 runs), bbbbbbb+dirty (1 run) |" in md
    assert "| 13.2 | unknown |" in md  # the extract run, alone in its group
    df = pd.read_csv(out / "results.csv").set_index("job")
    assert df["code"].to_dict() == {0: "aaaaaaa", 1: "aaaaaaa", 2: "bbbbbbb+dirty", 3: "unknown"}
    assert df.loc[0, "best_checkpoint"] == os.path.relpath(sweep / "0" / "checkpoints" / "epoch_003.ckpt", out)
    assert df.loc[0, "feature_cache.dir"] == "../../.cache/features"
    assert str(tmp_path) not in (out / "results.csv").read_text() + md


def test_text_runs_are_counted_in_texts():
    import pandas as pd

    from transferlab.report.experiments import example_noun, size_phrase

    assert example_noun(pd.DataFrame({"modality": ["text", "text"]})) == "texts"
    assert example_noun(pd.DataFrame({"modality": ["image", "text"]})) == "examples"
    assert example_noun(pd.DataFrame({"x": [1]})) == "images"  # records from before the field
    assert size_phrase("8", "texts") == "8 texts/class" and size_phrase("all", "texts") == "all training texts"


# --- confusion matrices -------------------------------------------------------------------------


def test_each_counted_run_links_its_confusion_picture_and_the_best_shows_per_class_recall(tmp_path: Path) -> None:
    from transferlab.utils.confusion import draw_confusion
    from transferlab.utils.probabilities import draw_reliability

    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    classes = ["cat", "dog", "frog"]
    matrices = {("partial", 1): [[9, 1, 0], [2, 8, 0], [0, 0, 10]], ("partial", 2): [[10, 0, 0], [4, 6, 0], [0, 1, 9]],
                ("extract", 1): [[5, 5, 0], [5, 5, 0], [0, 0, 10]]}
    for num, ((strategy, seed), matrix) in enumerate(matrices.items()):
        m = _metrics("lite0", strategy, 10, seed)
        m["test"]["acc"] = sum(matrix[i][i] for i in range(3)) / 30
        m["test"]["ece"] = 0.05 * (num + 1)
        m["confusion"] = {"split": "test", "classes": classes, "matrix": matrix, "picture": "confusion_matrix.png"}
        table = [{"lower": 0.9, "upper": 1.0, "count": 30, "confidence": 0.95, "accuracy": m["test"]["acc"]}]
        m["reliability"] = {"bins": 1, "test": {"ece": m["test"]["ece"], "table": table}, "picture": "reliability.png"}
        job = _job(sweep, num, [f"strategy={strategy}", f"seed={seed}"], m)
        draw_confusion(matrix, classes, strategy, job / "confusion_matrix.png")
        draw_reliability(table, job / "reliability.png", strategy)
    undrawn = _metrics("lite0", "full", 10, 1)
    undrawn["confusion"] = {"split": "test", "classes": classes, "matrix": [[10, 0, 0], [0, 10, 0], [0, 0, 0]]}
    _job(sweep, 3, ["strategy=full", "seed=1"], undrawn)  # its picture failed: counts only
    _job(sweep, 4, ["strategy=full", "seed=2"], _metrics("lite0", "full", 10, 2))  # a record from before schema 3
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0

    md = (out / "results.md").read_text()
    section = md.split("## Confusion matrices")[1].split("## Duplicates")[0]
    link = f"[confusion_matrix.png]({os.path.relpath(sweep / '0' / 'confusion_matrix.png', out)})"
    reliability = f"[reliability.png]({os.path.relpath(sweep / '0' / 'reliability.png', out)})"
    assert f"| 10 | partial | 1 | 90.00 | 0.050 | {link} | {reliability} |" in section
    assert "| 10 | extract | 1 | 66.67 | 0.150 | [confusion_matrix.png]" in section
    assert "| 10 | full | 1 | " in section and "| not drawn |" in section
    assert "| 10 | full | 2 |" not in section  # no matrix recorded
    # partial is best (mean 86.67 % over its seeds); its recall sums both seeds' counts, lowest first.
    assert "- 10 images/class, partial (2 runs): dog 70.0, cat 95.0, frog 95.0" in section
    # The picture paths in the CSV are relative like the others; the matrices stay in the records.
    df = pd.read_csv(out / "results.csv").set_index("job")
    assert df.loc[0, "confusion_png"] == os.path.relpath(sweep / "0" / "confusion_matrix.png", out)
    assert df.loc[0, "reliability_png"] == os.path.relpath(sweep / "0" / "reliability.png", out)
    assert "reliability.test.table" not in df.columns  # the bins stay in the records
    assert df["confusion_png"].isna().tolist() == [False, False, False, True, True]
    assert "confusion" not in df.columns and "[[9, 1, 0]" not in (out / "results.csv").read_text()
    assert str(tmp_path) not in md + (out / "results.csv").read_text()


def test_a_report_without_confusion_matrices_has_no_such_section(sweeps: tuple[Path, Path], tmp_path: Path) -> None:
    first, _ = sweeps
    assert main(["report", str(first), "--out", str(tmp_path / "out")]) == 0
    assert "Confusion" not in (tmp_path / "out" / "results.md").read_text()
    assert "confusion_png" not in pd.read_csv(tmp_path / "out" / "results.csv").columns


def test_per_class_recall_pools_runs_over_the_same_classes_and_names_the_weakest_of_many() -> None:
    from transferlab.report.markdown import recall_line, pooled_recall

    a = {"classes": ["x", "y"], "matrix": [[3, 1], [0, 4]]}
    other = {"classes": ["x", "z"], "matrix": [[9, 9], [9, 9]]}
    broken = {"classes": ["x", "y"], "matrix": [[1, 2, 3]]}
    assert pooled_recall([a, dict(a), other, broken]) == (["x", "y"], [0.75, 1.0], 2)
    assert pooled_recall([broken]) is None
    n = 30
    many = {"classes": [f"c{i}" for i in range(n)], "matrix": (np.eye(n, dtype=int) * (np.arange(n) + 1) + 1).tolist()}
    line = recall_line("all training images, full", pooled_recall([many]))
    assert line.startswith("- all training images, full (1 run): c0 ") and ", … (20 more classes, all higher)" in line
    assert len(line.split(": ", 1)[1].split(", …")[0].split(", ")) == 10  # the ten weakest, then the rest counted


def test_rows_show_the_labels_and_the_unlabelled_images_each_run_learned_from(tmp_path: Path) -> None:
    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    for num, (strategy, unlabeled) in enumerate((("extract", None), ("pseudo_label", 20_000))):
        m = _metrics("lite0", strategy if strategy in BASE else "extract", 10, 1)
        m["config"]["strategy"] = strategy
        m["data_sizes"] = {"train": 100, "val": 500, "test": 10_000, **({"unlabeled": unlabeled} if unlabeled else {})}
        _job(sweep, num, [f"strategy={strategy}"], m)
    write_report([sweep])
    md = (sweep / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model | data |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    rows = {r[3].strip("* "): r for r in ([c.strip() for c in line.strip("|").split("|")] for line in md.splitlines()
                                         if line.startswith("| lite0 |"))}
    labels, unlabeled = columns.index("labels"), columns.index("unlabeled")
    assert (rows["extract"][labels], rows["extract"][unlabeled]) == ("100", "0")
    assert (rows["pseudo_label"][labels], rows["pseudo_label"][unlabeled]) == ("100", "20k")
    results = pd.read_csv(sweep / "results.csv")
    assert sorted(results["data_sizes.unlabeled"].fillna(0)) == [0, 20_000]


# --- calibration columns and plot styles ----------------------------------------------------------


def test_the_groups_table_has_test_ece_and_nll_and_older_records_show_a_dash(tmp_path: Path) -> None:
    sweep = tmp_path / "multiruns" / "2026-01-01_10-00-00"
    for num, seed in enumerate((1, 2)):
        m = _metrics("lite0", "partial", 10, seed)
        m["test"].update(ece=0.02 + 0.02 * num, nll=0.30 + 0.10 * num)
        _job(sweep, num, ["strategy=partial", f"seed={seed}"], m)
    _job(sweep, 2, ["strategy=full", "seed=1"], _metrics("lite0", "full", 10, 1))  # schema 3: no ECE
    out = tmp_path / "report"
    assert main(["report", str(sweep), "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    header = next(line for line in md.splitlines() if line.startswith("| model | data |"))
    assert "| test ECE | test NLL |" in header
    partial = next(line for line in md.splitlines() if line.startswith("| lite0 |") and "partial" in line)
    assert "| 0.030 ± 0.014 | 0.350 ± 0.071 |" in partial
    full = next(line for line in md.splitlines() if line.startswith("| lite0 |") and "full" in line)
    assert "| – | – |" in full


def test_every_strategy_gets_its_own_colour_and_marker_in_every_plot() -> None:
    from matplotlib.colors import to_hex

    from transferlab.report.plots import acc_vs_size, strategy_styles

    names = [f"strategy_{i:02d}" for i in range(13)]
    styles = strategy_styles(reversed(names))  # by name, whatever order they come in
    assert list(styles) == names
    assert len({to_hex(s.color) for s in styles.values()}) == len(names)
    assert len({(to_hex(s.color), s.marker) for s in styles.values()}) == len(names)
    many = strategy_styles([f"s{i}" for i in range(25)])  # past tab20 too
    assert len({to_hex(s.color) for s in many.values()}) == 25
    # The same style in a plot that holds only some of the report's strategies.
    groups = pd.DataFrame({"model": "m", "data": "d", "strategy": ["strategy_05", "strategy_11"], "size": "10",
                           "size_x": 10.0, "test_mean": [50.0, 60.0], "test_std": [1.0, 1.0]})
    fig = acc_vs_size(groups, 100.0, styles)
    drawn = {bar.get_label(): (to_hex(bar.lines[0].get_color()), bar.lines[0].get_marker()) for bar in fig.axes[0].containers}
    assert drawn == {n: (to_hex(styles[n].color), styles[n].marker) for n in ("strategy_05", "strategy_11")}


def test_a_tuned_arm_has_its_strategys_colour_and_marker_drawn_dashed_and_hollow() -> None:
    from matplotlib.colors import to_hex

    from transferlab.report.plots import acc_vs_size, strategy_styles, untuned_label

    assert untuned_label("partial (tuned)") == ("partial", True)
    assert untuned_label("lora (r=8, tuned)") == ("lora (r=8)", True)
    assert untuned_label("dann (domain_weight=0)") == ("dann (domain_weight=0)", False)
    styles = strategy_styles(["partial", "partial (tuned)", "full", "full (tuned)", "extract"])
    assert len({to_hex(s.color) for s in styles.values()}) == 3  # three methods, three colours
    for name in ("partial", "full"):
        default, tuned = styles[name], styles[f"{name} (tuned)"]
        assert (to_hex(tuned.color), tuned.marker) == (to_hex(default.color), default.marker)
        assert (default.linestyle, tuned.linestyle) == ("-", "--") and tuned.face == "none"
    groups = pd.DataFrame({"model": "m", "data": "d", "strategy": ["partial", "partial", "partial (tuned)", "partial (tuned)"],
                           "size": ["10", "100"] * 2, "size_x": [10.0, 100.0] * 2, "test_mean": [50.0, 60.0, 55.0, 66.0],
                           "test_std": [1.0] * 4})
    fig = acc_vs_size(groups, 100.0, styles)
    lines = {bar.get_label(): bar.lines[0] for bar in fig.axes[0].containers}
    assert lines["partial"].get_linestyle() == "-" and lines["partial (tuned)"].get_linestyle() == "--"
    assert lines["partial (tuned)"].get_markerfacecolor() == "none"
    assert to_hex(lines["partial"].get_markerfacecolor()) == to_hex(styles["partial"].color)
