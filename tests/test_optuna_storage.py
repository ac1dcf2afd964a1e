"""hparams_search=optuna with persistent storage: a second sweep on the same sqlite file resumes the
study (its trials add to the first sweep's, and the best is taken over all of them)."""

import json

import optuna
import pytest
import yaml
from test_bad_input import run
from test_sweeps import TINY

from transferlab import train as train_cli


def _sweep(tmp_path, monkeypatch, db, trials, name):
    code, _, err = run(train_cli.main, [
        "-m", *TINY, "hparams_search=optuna", f"hydra.sweeper.storage=sqlite:///{db}",
        f"hydra.sweeper.n_trials={trials}", "hydra.sweeper.sampler.n_startup_trials=1",
        f"hydra.sweep.dir={tmp_path / name}", "test=false", "+trainer.enable_progress_bar=false",
    ], tmp_path, monkeypatch)
    assert code in (0, None), err


@pytest.mark.slow
def test_a_study_in_sqlite_resumes(tmp_path, monkeypatch):
    db = tmp_path / "optuna.db"
    _sweep(tmp_path, monkeypatch, db, 2, "first")
    study = optuna.load_study(study_name="hparams_search", storage=f"sqlite:///{db}")
    first = [(t.number, t.params, t.value) for t in study.trials]
    assert len(first) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)

    _sweep(tmp_path, monkeypatch, db, 1, "second")
    study = optuna.load_study(study_name="hparams_search", storage=f"sqlite:///{db}")
    assert len(study.trials) == 3
    # The first sweep's trials are kept as they were, not run again.
    assert [(t.number, t.params, t.value) for t in study.trials[:2]] == first
    # The resumed sweep's answer is the best over every trial in the study.
    result = yaml.safe_load((tmp_path / "second" / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(t.value for t in study.trials))
    # Its one new trial ran as a job of the second sweep and was recorded like any run.
    (record,) = (tmp_path / "second").glob("*/metrics.json")
    assert json.loads(record.read_text())["val"]["acc"] == pytest.approx(study.trials[2].value)
