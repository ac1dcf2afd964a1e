"""The tables rendered from committed records (docs/results/imbalance/, docs/results/tuned_compare/*/)
say what their records say, and every record comes from a clean tree of one commit."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tuned = _script("tuned_compare_table")
imbalance = _script("imbalance_table")
TUNED_DIRS = tuned.rendered_dirs()


def test_there_is_a_published_tuned_comparison():
    assert TUNED_DIRS, "docs/results/tuned_compare/ holds no published sweep (meta.json)"


@pytest.mark.parametrize("out", TUNED_DIRS, ids=lambda p: p.name)
def test_a_tuned_comparison_table_is_what_its_records_render(out):
    assert (out / "README.md").read_text() == tuned.render(out), \
        f"{out / 'README.md'} differs from its records: run python scripts/tuned_compare_table.py render"


@pytest.mark.parametrize("out", TUNED_DIRS, ids=lambda p: p.name)
def test_a_tuned_comparison_comes_from_one_clean_commit_and_names_no_machine_path(out):
    meta = json.loads((out / "meta.json").read_text())
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert records and all(r["code"] == {"commit": meta["commit"], "dirty": False} for r in records)
    text = (out / "tuning.json").read_text() + "".join(p.read_text() for p in (out / "records").glob("*.json"))
    assert "/tmp/" not in text and "/work/" not in text and "/home/" not in text and "run_dir\": \"/" not in text


@pytest.mark.parametrize("out", TUNED_DIRS, ids=lambda p: p.name)
def test_every_tuned_table_figure_is_a_records_test_accuracy(out):
    # The table is rendered from tuning.json; each arm run in it must be a tested job's record.
    records = {}
    for p in (out / "records").glob("*.json"):
        r = json.loads(p.read_text())
        c = r["config"]
        records[(c["samples_per_class"], c["strategy"], c["tune_arm"], c["seed"])] = r
    outcomes = json.loads((out / "tuning.json").read_text())["outcomes"]
    checked = 0
    for o in outcomes:
        size = next(int(g.split("=")[1]) for g in o["grid"] if g.startswith("data.samples_per_class="))
        for arm in ("default", "tuned"):
            for run in o[arm]:
                record = records[(size, o["strategy"], arm, run["seed"])]
                assert (run["test"], run["val"]) == (record["test"]["acc"], record["val"]["acc"]), (o["strategy"], arm, run)
                checked += 1
    assert checked == len(records)


def test_an_edited_record_makes_its_tuned_table_stale(tmp_path):
    out = shutil.copytree(TUNED_DIRS[0], tmp_path / TUNED_DIRS[0].name)
    summary = json.loads((out / "tuning.json").read_text())
    summary["outcomes"][0]["default"][0]["test"] = 0.123456
    (out / "tuning.json").write_text(json.dumps(summary))
    assert (out / "README.md").read_text() != tuned.render(out)


def test_the_imbalance_table_is_what_its_records_render():
    assert (imbalance.OUT / "README.md").read_text() == imbalance.render(), \
        "docs/results/imbalance/README.md differs from its records: run python scripts/imbalance_table.py --render"


def test_the_imbalance_records_come_from_committed_code():
    records = [json.loads(p.read_text()) for p in imbalance.OUT.glob("*_seed*.json")]
    assert len(records) == 3 * len(imbalance.ARMS)
    assert all(r["code"].get("dirty") is False and r["code"].get("commit") for r in records)


def test_an_edited_imbalance_record_makes_the_table_stale(tmp_path, monkeypatch):
    copy = shutil.copytree(imbalance.OUT, tmp_path / "imbalance")
    path = next(copy.glob("natural_none_seed1.json"))
    record = json.loads(path.read_text())
    record["test"]["f1_macro"] = 0.5
    path.write_text(json.dumps(record))
    monkeypatch.setattr(imbalance, "OUT", copy)
    assert (copy / "README.md").read_text() != imbalance.render()


RANKING = ROOT / "docs" / "results" / "ranking"


def test_the_ranking_agreement_is_what_the_committed_table_and_fine_tuning_records_give():
    from transferlab.ranking.agreement import agreement, agreement_markdown
    from transferlab.ranking.scores import SCORES
    from transferlab.ranking.table import read_csv

    taus, matched = agreement(read_csv(RANKING / "ranking.csv"), list(SCORES), [RANKING / "finetuned"])
    assert (RANKING / "agreement.md").read_text() == "# Ranking against fine-tuning\n\n" + agreement_markdown(taus, matched), \
        "docs/results/ranking/agreement.md differs from its records: run transferlab rank --table docs/results/ranking --against docs/results/ranking/finetuned"


def test_the_ranking_and_its_fine_tuning_records_come_from_committed_code_and_name_no_machine_path():
    assert json.loads((RANKING / "provenance.json").read_text())["code"]["dirty"] is False
    records = [json.loads(p.read_text()) for p in (RANKING / "finetuned").rglob("metrics.json")]
    assert len(records) >= 8 * 3
    assert all(r["provenance"]["code"]["dirty"] is False for r in records)
    text = "".join(p.read_text() for p in (RANKING / "finetuned").rglob("metrics.json"))
    assert "/tmp/" not in text and "/work/" not in text and "/home/" not in text
