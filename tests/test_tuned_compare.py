"""The tuned comparison: each strategy's own search space, the same budget for every strategy, the
test split sealed during the search, the chosen settings re-run over the seeds, a relaunch that
reuses what finished, and the report's tuned arms and verdict."""

import dataclasses
import json
from pathlib import Path

import pandas as pd
import pytest

from transferlab.config.tuning import DEFAULT_ARM, SEARCH_ARM, TUNED_ARM
from transferlab.data.sealed import SealedSplit
from transferlab.errors import DataError
from transferlab.finetune.search_space import Choice, IntRange, LogUniform, Uniform, override_value
from transferlab.finetune.strategies import STRATEGIES
from transferlab.report.stats import compare, superseded_by_tuned
from transferlab.tune.compare import JobResult, Trial, TunedCompare, arm_overrides, best_trial
from transferlab.tune.summary import arm_verdict, grid_labels, render

TINY = ["model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
        "data.source_args.train_per_class=12", "data.batch_size=8", "data.val_per_class=4", "data.samples_per_class=6",
        "trainer.accelerator=cpu", "trainer.max_epochs=1", "+trainer.enable_progress_bar=false"]


# --- search spaces ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_searched_key_is_a_knob_and_its_default_lies_inside(name):
    cls = STRATEGIES[name]
    knobs = {f.name: f.default for f in dataclasses.fields(cls.Config)}
    for key, dist in cls.search_space.items():
        assert key in knobs, f"{name}: strategy.{key} is not a knob of {cls.Config.__name__}"
        default = knobs[key]
        if default is not None and not isinstance(dist, Choice):
            assert dist.contains(default), f"{name}: its default {key}={default} lies outside {dist.describe()}"
    if cls.trains_network and cls.uses_optimizer:
        assert "strategy.lr" in cls.tuning_space() and "optim.weight_decay" in cls.tuning_space(), name
    if not cls.trains_network:
        assert cls.tuning_space() == {}, name


def test_distributions_suggest_inside_their_bounds_and_write_stable_overrides():
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    space = {"a": LogUniform(1e-4, 1e-2), "b": Uniform(0.3, 1.0), "c": IntRange(1, 4), "d": Choice([4, 8, 16])}
    for _ in range(20):
        t = study.ask()
        values = {k: d.suggest(t, k) for k, d in space.items()}
        assert all(space[k].contains(v) for k, v in values.items()), values
        study.tell(t, 0.0)
    assert [override_value(v) for v in (1.0, 0.1, True, None, 3)] == ["1.0", "0.1", "true", "null", "3"]
    with pytest.raises(ValueError):
        LogUniform(0.0, 1.0)


# --- the search itself, with jobs simulated ------------------------------------------------------
class FakeJobs:
    """Validation accuracy as a smooth function of lr (best near 3e-3); test accuracy that the
    search must never see."""

    def __init__(self, fail_first: int = 0):
        self.launched: list[list[str]] = []
        self.fail_first = fail_first

    def __call__(self, batch):
        results = []
        for overrides in batch:
            self.launched.append(overrides)
            kv = dict(o.split("=", 1) for o in overrides)
            lr = float(kv.get("strategy.lr", "2e-3"))
            val = 0.9 - abs(__import__("math").log10(lr / 3e-3)) * 0.1
            searched = sum(1 for o in self.launched if f"tune.arm={SEARCH_ARM}" in o)
            if kv["tune.arm"] == SEARCH_ARM and searched <= self.fail_first:
                results.append(JobResult(overrides, None))
                continue
            test = None if kv.get("test") == "false" else val - 0.05
            results.append(JobResult(overrides, val, {"val": {"acc": val}, "test": {} if test is None else {"acc": test}}))
        return results


def spaces(name):
    return STRATEGIES[name].tuning_space()


def test_every_strategy_gets_the_same_trials_on_validation_and_test_is_never_asked_for():
    jobs = FakeJobs()
    outcomes = TunedCompare(["partial", "full", "lora", "pixel_lr"], trials=5, seeds=[1, 2, 3], launch=jobs,
                            spaces=spaces).run([["data.samples_per_class=10"]])
    search = [o for o in jobs.launched if f"tune.arm={SEARCH_ARM}" in o]
    per_strategy = pd.Series([next(x for x in o if x.startswith("strategy=")) for o in search]).value_counts()
    assert per_strategy.to_dict() == {"strategy=partial": 5, "strategy=full": 5, "strategy=lora": 5}
    assert all("test=false" in o and "seed=1" in o and "auto_resume=true" in o for o in search)
    assert not any("test=false" in o for o in jobs.launched if f"tune.arm={SEARCH_ARM}" not in o)
    by = {o.strategy: o for o in outcomes}
    assert by["pixel_lr"].trials == [] and by["pixel_lr"].tuned == [] and len(by["pixel_lr"].default) == 3
    for name in ("partial", "full", "lora"):
        o = by[name]
        assert len(o.trials) == 5 and [r.seed for r in o.tuned] == [1, 2, 3] == [r.seed for r in o.default]
        best = max(o.trials, key=lambda t: t.val)
        assert o.best == best.params  # chosen on validation, the tuned arm re-runs exactly that
        tuned_jobs = [j for j in jobs.launched if f"tune.arm={TUNED_ARM}" in j and f"strategy={name}" in j]
        assert all(f"strategy.lr={override_value(best.params['strategy.lr'])}" in j for j in tuned_jobs)
        assert all(r.test is not None for r in o.tuned + o.default)


def test_failed_trials_count_against_the_budget_and_the_best_completed_one_wins():
    jobs = FakeJobs(fail_first=2)
    (o,) = TunedCompare(["partial"], trials=4, seeds=[1], launch=jobs, spaces=spaces).run([[]])
    assert len(o.trials) == 4 and [t.val is None for t in o.trials] == [True, True, False, False]
    assert o.best == best_trial(o.trials).params
    assert best_trial([Trial(0, {}, None), Trial(1, {"x": 1}, 0.5), Trial(2, {"x": 2}, 0.5)]).number == 1
    assert best_trial([Trial(0, {}, None)]) is None


def test_a_relaunch_asks_the_same_jobs_in_the_same_order():
    # What lets auto_resume reuse every finished trial: the seeded sampler, told the same values,
    # asks for the same settings, written the same way.
    first, second = FakeJobs(), FakeJobs()
    TunedCompare(["partial", "two_phase"], trials=4, seeds=[1, 2], launch=first, spaces=spaces, sampler_seed=3).run([[]])
    TunedCompare(["partial", "two_phase"], trials=4, seeds=[1, 2], launch=second, spaces=spaces, sampler_seed=3).run([[]])
    assert first.launched == second.launched
    other = FakeJobs()
    TunedCompare(["partial"], trials=4, seeds=[1, 2], launch=other, spaces=spaces, sampler_seed=4).run([[]])
    assert other.launched != first.launched[: len(other.launched)]


def test_a_budget_of_no_trials_or_no_seeds_is_refused():
    with pytest.raises(ValueError, match="at least 1 trial"):
        TunedCompare(["partial"], trials=0, seeds=[1], launch=FakeJobs(), spaces=spaces)
    with pytest.raises(ValueError, match="no seeds"):
        TunedCompare(["partial"], trials=2, seeds=[], launch=FakeJobs(), spaces=spaces)


def test_arm_overrides_and_grid_labels():
    assert arm_overrides(["a=1"], "partial", SEARCH_ARM, 1, {"strategy.lr": 0.01}) == [
        "a=1", "strategy=partial", "seed=1", "tune.arm=search", "strategy.lr=0.01", "test=false", "auto_resume=true"]
    assert grid_labels([["m=x", "s=10"], ["m=x", "s=100"]]) == ["s=10", "s=100"]
    assert grid_labels([["m=x"]]) == ["m=x"]


def test_the_summary_shows_both_arms_and_says_when_the_verdict_changes():
    jobs = FakeJobs()
    outcomes = TunedCompare(["partial", "pixel_lr"], trials=3, seeds=[1, 2, 3], launch=jobs, spaces=spaces).run([[]])
    by = {o.strategy: o for o in outcomes}
    # pixel_lr leads on defaults; partial, tuned, leads after.
    for r in by["pixel_lr"].default:
        r.test = 0.8
    for r in by["partial"].default:
        r.test = 0.7 + 0.001 * r.seed
    for r in by["partial"].tuned:
        r.test = 0.9 + 0.002 * r.seed
    assert arm_verdict(outcomes, "default")[0] == "pixel_lr" and arm_verdict(outcomes, "tuned")[0] == "partial"
    text = render(outcomes, 3)
    assert "| partial |" in text and "nothing to search" in text and "the verdict changes once every arm is tuned" in text
    assert "partial beats pixel_lr" in text


# --- the sealed test split ---------------------------------------------------------------------
def test_a_sealed_split_tells_its_size_and_nothing_else():
    split = SealedSplit(7, "tune.arm=search")
    assert len(split) == 7 and split.nbytes == 0 and split.is_truncated is None
    for read in (lambda: split.images, lambda: split.labels, lambda: split[0]):
        with pytest.raises(DataError, match="the test split is sealed"):
            read()


def test_a_search_trial_must_not_test(tmp_path, monkeypatch, capsys):
    from test_bad_input import error_line, run

    from transferlab import train as train_cli

    code, _, err = run(train_cli.main, [*TINY, "tune.arm=search"], tmp_path, monkeypatch, capsys)
    assert "tune.arm=search is a tuning trial" in error_line(code, err) and "test=false" in error_line(code, err)
    code, _, err = run(train_cli.main, [*TINY, "tune.arm=best"], tmp_path, monkeypatch, capsys)
    assert "tune.arm" in error_line(code, err)


# --- end to end --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tuned_sweep(tmp_path_factory):
    # In this process (Hydra's multirun runs its jobs here too): the sweep, then the same sweep
    # launched again with one more trial, as after a kill.
    from test_bad_input import run

    from transferlab import train as train_cli

    root = tmp_path_factory.mktemp("tuned")
    args = ["-m", "experiment=tuned_compare", *TINY, "strategy=partial,pixel_lr", "hydra.sweeper.seeds=[1]"]
    with pytest.MonkeyPatch.context() as mp:
        codes = [run(train_cli.main, [*args, f"tune.trials={n}"], root, mp)[0] for n in (2, 3)]
    assert codes == [0, 0]
    sweeps = sorted((root / "logs" / "tuned_compare" / "multiruns").iterdir())
    return root, sweeps


def records_of(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob("metrics.json"))]


@pytest.mark.slow
def test_a_tuned_sweep_searches_on_validation_then_tests_the_chosen_settings(tuned_sweep):
    _, (sweep, _) = tuned_sweep
    summary = json.loads((sweep / "tuning.json").read_text())
    (partial, pixel) = summary["outcomes"]
    assert partial["strategy"] == "partial" and len(partial["trials"]) == 2 and partial["best"]
    assert pixel["trials"] == [] and len(pixel["default"]) == 1
    records = records_of(sweep)
    assert len(records) == 1 + 2 + 1 + 1  # partial default, trials, tuned; pixel_lr default
    for m in records:
        assert m["status"] == "completed", m["error"]
        if m["config"]["tune_arm"] == SEARCH_ARM:
            assert m["test"] == {} and m["val"]["acc"] >= 0 and m["config"]["seed"] == 1
        else:
            assert m["test"]["acc"] >= 0
    search_logs = [p.read_text() for p in sweep.rglob("*.log") if "tune.arm=search" in (p.parent / ".hydra" / "overrides.yaml").read_text()]
    assert len(search_logs) == 2 and all("the test split is sealed for this tuning trial" in log for log in search_logs)
    tuned = [m for m in records if m["config"]["tune_arm"] == TUNED_ARM]
    assert {m["config"]["lr"] for m in tuned} == {partial["best"]["strategy.lr"]}
    assert "| partial |" in (sweep / "tuning.md").read_text()


@pytest.mark.slow
def test_a_relaunched_tuned_sweep_reuses_every_finished_job(tuned_sweep):
    _, (first, again) = tuned_sweep
    records = records_of(again)
    search = [m for m in records if m["config"]["tune_arm"] == SEARCH_ARM]
    assert len(search) == 3 and len(json.loads((again / "tuning.json").read_text())["outcomes"][0]["trials"]) == 3
    # The two finished trials and every default run come back from the first sweep, untrained.
    earlier = {m["run_dir"] for m in records_of(first)}
    assert sum(m.get("reused_from") in earlier for m in search) == 2
    assert all(m.get("reused_from") in earlier for m in records if m["config"]["tune_arm"] == DEFAULT_ARM)


@pytest.mark.slow
def test_the_report_shows_default_and_tuned_arms_and_judges_the_tuned_ones(tuned_sweep, capsys):
    from transferlab.cli import main as transferlab

    _, (sweep, _) = tuned_sweep
    assert transferlab(["report", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert "3 jobs (3 completed)" in out  # the trials are in tuning.md, not the table
    text = (sweep / "results.md").read_text()
    assert "| partial | partial (tuned) | pixel_lr |" in text.replace("**", "")
    assert "[tuning.md](tuning.md)" in text
    verdict = next(line for line in out.splitlines() if "synthetic" in line)
    assert "partial (tuned)" in verdict and " partial " not in verdict.replace("partial (tuned)", "")


def test_the_verdict_leaves_out_default_arms_that_have_a_tuned_one():
    runs = pd.DataFrame({
        "model": "m", "data": "d", "size": "10", "seed": ["1", "2"] * 3,
        "strategy": ["partial"] * 2 + ["partial (tuned)"] * 2 + ["pixel_lr"] * 2,
        "strategy_name": ["partial"] * 4 + ["pixel_lr"] * 2,
        "tune_arm": [DEFAULT_ARM] * 2 + [TUNED_ARM] * 2 + [DEFAULT_ARM] * 2,
        "test": [95.0, 96.0, 80.0, 81.0, 70.0, 72.0],
    })
    assert superseded_by_tuned(runs) == {"partial"}
    groups = runs.groupby(["model", "data", "size", "strategy"], sort=False).agg(test_mean=("test", "mean")).reset_index()
    (row,) = compare(runs, groups).to_dict("records")
    assert (row["best"], row["runner_up"]) == ("partial (tuned)", "pixel_lr")
    assert superseded_by_tuned(runs.drop(columns="tune_arm")) == set()
