"""`transferlab reproduce`: which runs a published table names, how one is re-run, and what a
re-run that gives the same figures, or other ones, prints."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import pytest

from test_cli import ROOT, TINY, metrics_of, run_cli
from transferlab import cli
from transferlab.errors import ConfigError
from transferlab.reproduce.rerun import Reproduction, environment, markdown, prepare_out, threads_used
from transferlab.reproduce.sources import RecordedRun, cheapest, recorded_runs, rerun_overrides

PUBLISHED = sorted(p for p in (ROOT / "docs" / "results").glob("*/") if p.is_dir() and p.name != "ranking")
PUBLISHED += sorted(p.parent for p in (ROOT / "docs" / "results").glob("*/*/meta.json"))
PUBLISHED = [p for p in PUBLISHED if (p / "results.csv").is_file() or list(p.glob("*.json")) or (p / "records").is_dir()]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _write_json(path: Path, data: dict) -> Path:
    path.write_text(json.dumps(data))
    return path


def _row(job, seconds, status="completed", acc="0.5"):
    return {"job": job, "status": status, "overrides": f"strategy=extract seed={job} hydra.run.dir=/x launcher=parallel",
            "test.acc": acc, "test.f1_macro": "0.4", "val.acc": "", "time.total_s": seconds,
            "provenance.code.commit": "abc1234", "provenance.code.dirty": "False"}


def test_placement_overrides_are_dropped_and_the_computation_kept():
    kept = rerun_overrides(["strategy=full", "hydra.run.dir=/tmp/x", "launcher=parallel", "auto_resume=true",
                            "paths.root_dir=/work/a", "+trainer.enable_progress_bar=false", "hydra/launcher=basic"])
    assert kept == ("strategy=full", "+trainer.enable_progress_bar=false")


def test_a_results_csv_is_read_as_its_rows_and_the_cheapest_completed_one_is_chosen(tmp_path):
    table = tmp_path / "t"
    table.mkdir()
    _write_csv(table / "results.csv", [_row(1, "30"), _row(2, "3", status="failed"), _row(3, "10", acc="0.7")])
    runs = recorded_runs(table)
    assert [r.name for r in runs] == ["t/1", "t/2", "t/3"]
    assert runs[0].overrides == ("strategy=extract", "seed=1")
    assert runs[0].figures == {"test.acc": 0.5, "test.f1_macro": 0.4} and runs[0].dirty is False
    best = cheapest(runs)
    assert best.name == "t/3" and best.figures["test.acc"] == 0.7


def test_a_record_with_a_command_is_re_run_from_its_overrides(tmp_path):
    path = tmp_path / "arm_seed1.json"
    path.write_text(json.dumps({"command": "python train.py experiment=imbalance seed=1", "status": "completed",
                                "code": {"commit": "abc", "dirty": False}, "test": {"acc": 0.8, "ece": 0.1},
                                "time": {"total_s": 4.0}}))
    (run,) = recorded_runs(path)
    assert run.overrides == ("experiment=imbalance", "seed=1")
    assert run.figures == {"test.acc": 0.8, "test.ece": 0.1} and run.seconds == 4.0


@pytest.mark.parametrize("table", PUBLISHED, ids=lambda p: str(p.relative_to(ROOT / "docs" / "results")))
def test_every_published_table_names_runs_that_can_be_re_run(table):
    runs = recorded_runs(table)
    assert runs and all(r.overrides for r in runs)
    assert all(r.figures.get("test.acc") is not None for r in runs if r.completed)
    for r in runs:
        assert not [o for o in r.overrides if "/tmp/" in o or "/work/" in o or o.startswith("hydra.")], r


@pytest.mark.parametrize("bad, message", [
    ("missing", "no such file or folder"),
    ("empty_dir", "holds no results.csv, metrics.json or records"),
    ("no_overrides.csv", "has no overrides column"),
    ("no_command.json", "names no overrides and no command"),
    ("broken.json", "cannot read the record"),
])
def test_bad_targets_say_what_is_wrong_and_what_to_pass(tmp_path, bad, message):
    (tmp_path / "empty_dir").mkdir()
    (tmp_path / "no_overrides.csv").write_text("job,test.acc\n1,0.5\n")
    (tmp_path / "no_command.json").write_text(json.dumps({"status": "completed", "test": {"acc": 0.5}}))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ConfigError, match=message):
        recorded_runs(tmp_path / bad)


def test_a_table_whose_runs_all_failed_has_nothing_to_reproduce():
    with pytest.raises(ConfigError, match="none of its runs completed"):
        cheapest([RecordedRun(name="a", overrides=("x=1",), completed=False)])


def test_the_report_says_same_for_an_equal_figure_and_the_change_for_a_moved_one():
    run = RecordedRun(name="t/1", overrides=("seed=1",), figures={"test.acc": 0.7114, "val.acc": 0.5}, commit="8b57703aa")
    result = Reproduction(run=run, run_dir="x", status="completed", seconds=3.0, figures={"test.acc": 0.7057, "val.acc": 0.5})
    text = markdown([result], {"commit": "1234567890", "dirty": False})
    assert "| t/1 | 8b57703 | torch default | test.acc | 0.7114 | 0.7057 | -0.0057 |" in text
    assert "| t/1 | 8b57703 | torch default | val.acc | 0.5000 | 0.5000 | same |" in text
    assert not result.reproduced()
    # A figure the re-run no longer gives is not reproduced, even when the others match.
    lost = Reproduction(run=run, run_dir="x", status="completed", seconds=3.0, figures={"test.acc": 0.7114})
    assert lost.deltas() == {"test.acc": 0.0} and not lost.reproduced()
    failed = Reproduction(run=run, run_dir="x", status="failed", seconds=1.0, error="DataError: no such folder")
    assert "| t/1 | 8b57703 | torch default | failed | | | DataError: no such folder |" in markdown([failed], {"commit": None})


def test_a_re_run_gets_the_torch_threads_its_record_ran_with(tmp_path):
    # A parallel sweep's jobs run with fewer threads than a single run, and float sums follow them.
    row = {**_row(1, "3"), "provenance.machine.torch_threads": "1"}
    (run,) = recorded_runs(_write_csv(tmp_path / "results.csv", [row]))
    assert run.threads == 1
    assert environment(run)["OMP_NUM_THREADS"] == "1" and environment(run)["MKL_NUM_THREADS"] == "1"
    record = {"overrides": ["seed=1"], "provenance": {"machine": {"torch_threads": 2}}, "test": {"acc": 0.5}}
    assert recorded_runs(_write_json(tmp_path / "r.json", record))[0].threads == 2
    assert threads_used(run, environment(run)) == "1 (recorded)"
    unknown = RecordedRun(name="a", overrides=("seed=1",))
    assert environment(unknown).get("OMP_NUM_THREADS") == os.environ.get("OMP_NUM_THREADS")
    assert threads_used(unknown, {"OMP_NUM_THREADS": "1"}) == "1 (OMP_NUM_THREADS)"
    assert threads_used(unknown, {}) == "torch default"


def test_cli_reproduce_bad_target_is_one_line_and_status_2(capsys):
    assert cli.main(["reproduce", "no/such/table"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("transferlab reproduce: no/such/table: no such file") and "\n" not in err


def test_cli_reproduce_run_names_no_run(capsys, tmp_path):
    _write_csv(tmp_path / "results.csv", [_row(1, "3")])
    assert cli.main(["reproduce", str(tmp_path), "--run", "99"]) == 2
    assert "matches no run" in capsys.readouterr().err


def test_a_run_re_run_at_this_commit_gives_its_recorded_figures(tmp_path, monkeypatch, capsys):
    # CPU runs are deterministic: the record of a run, re-run from its overrides, gives the same
    # figures; the same record with an edited figure shows the change.
    run_cli("train.py", [*TINY, "strategy=extract", "trainer.max_epochs=1"], tmp_path / "first")
    recorded, run_dir = metrics_of(tmp_path / "first")
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(tmp_path / "again"))
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**recorded, "test": {**recorded["test"], "acc": recorded["test"]["acc"] - 0.25}}))
    out = tmp_path / "reproduced"
    assert cli.main(["reproduce", str(run_dir / "metrics.json"), str(edited), "--out", str(out)]) == 0
    report = json.loads((out / "reproduce.json").read_text())
    first, second = report["runs"]
    assert first["status"] == "completed" and first["reproduced"] is True, first
    assert first["figures"]["test.acc"] == recorded["test"]["acc"]
    assert second["reproduced"] is False and second["deltas"]["test.acc"] == pytest.approx(0.25)
    assert "| test.acc |" in (out / "reproduce.md").read_text() and "same" in capsys.readouterr().out


def test_an_output_folder_of_something_else_is_refused_and_one_of_reproduce_is_replaced(tmp_path, capsys):
    _write_csv(tmp_path / "results.csv", [_row(1, "3")])
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("a finished run's results")
    assert cli.main(["reproduce", str(tmp_path / "results.csv"), "--out", str(other)]) == 2
    assert "not a folder transferlab reproduce wrote" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "a finished run's results"
    ours = tmp_path / "ours"
    (ours / "t_1").mkdir(parents=True)
    (ours / "t_1" / "metrics.json").write_text("{}")
    (ours / "reproduce.json").write_text("{}")
    assert prepare_out(ours) == ours and list(ours.iterdir()) == []


def test_the_same_run_cited_by_two_tables_is_re_run_once(tmp_path, capsys):
    for table in ("a", "b"):
        (tmp_path / table).mkdir()
        _write_csv(tmp_path / table / "results.csv", [_row(1, "3")])
    (tmp_path / "c").mkdir()
    _write_csv(tmp_path / "c" / "results.csv", [_row(1, "3", acc="0.9")])  # same overrides, another figure
    assert cli.main(["reproduce", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "c"), "--list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["a/1: python train.py strategy=extract seed=1", "c/1: python train.py strategy=extract seed=1"]
