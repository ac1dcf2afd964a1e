"""The run record: one typed, versioned schema for metrics.json, which old files still fit."""

import json
import logging
import subprocess
from pathlib import Path

from transferlab.engine.execute import Outcome
from transferlab.engine.recording import run_status
from transferlab.record import SCHEMA_VERSION, RunRecord, read_record
from transferlab.utils.provenance import provenance
from transferlab.utils.run_stats import RunStats

ROOT = Path(__file__).resolve().parents[1]

# What transferlab 0.1 wrote (schema 1: no "schema" key), trimmed from a real run.
SCHEMA_1 = {
    "status": "completed", "error": None,
    "test": {"acc": 0.8766, "acc_top5": 0.9966, "loss": 0.43}, "val": {"acc": 0.876},
    "params": {"total": 3383818, "trainable": 3129834},
    "time": {"fit_s": 160.1, "test_s": 89.9, "total_s": 256.7, "train_images_per_s": 101.3},
    "config": {"model": "efficientnet_lite0", "model_name": "tf_efficientnet_lite0", "weights": "package:x",
               "strategy": "extract", "data": "fashion_mnist", "samples_per_class": 100, "train_fraction": None,
               "train_size": 1000, "image_size": 96, "seed": 42, "max_epochs": 15, "lr": 0.002, "decay": 1.0,
               "unfreeze_top": 0, "solver": "lbfgs"},
    "data_sizes": {"train": 1000, "val": 500, "test": 10000}, "weights_loaded": "package:x",
    "best_checkpoint": "/runs/a/checkpoints/last.ckpt", "run_dir": "/runs/a", "overrides": ["strategy=extract"],
    "resumed_from": None, "probe": {"solver": "lbfgs", "weight_decay": 0.01}, "a_key_from_the_future": 1,
}


def test_schema_1_files_load_and_keep_everything(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(SCHEMA_1))
    record = read_record(tmp_path)
    assert record.schema == 1 and record.completed and record.test["acc"] == 0.8766
    assert record.params.trainable == 3129834 and record.time.total_s == 256.7
    assert record.config.strategy == "extract" and record.config.variant == "lbfgs"  # the probe, by its solver
    again = record.to_dict()
    assert again["a_key_from_the_future"] == 1  # unknown keys are kept, not dropped
    for key, value in SCHEMA_1.items():
        if isinstance(value, dict) and key in ("config", "params", "time"):  # typed: new fields are added empty
            assert {k: again[key][k] for k in value} == value, key
        else:
            assert again[key] == value, key


def test_a_new_record_round_trips_and_says_where_it_ran(tmp_path):
    record = RunRecord(provenance=provenance(ROOT))
    record.write(tmp_path / "metrics.json")
    back = read_record(tmp_path)
    assert back.schema == SCHEMA_VERSION and back.to_dict() == record.to_dict()
    code, versions, machine = back.provenance["code"], back.provenance["versions"], back.provenance["machine"]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's is)
        assert code["commit"] == head.stdout.strip() and isinstance(code["dirty"], bool)
    assert {"python", "torch", "timm", "lightning"} <= set(versions)
    assert machine["cpu_count"] and machine["cpu"]


def test_unreadable_records_are_none_not_a_traceback(tmp_path):
    assert read_record(tmp_path) is None
    (tmp_path / "metrics.json").write_text('{"status": "compl')
    assert read_record(tmp_path) is None
    (tmp_path / "metrics.json").write_text("[1, 2]")
    assert read_record(tmp_path) is None


def _outcome(best, untrained=()):
    return Outcome(val={}, test={}, best_checkpoint=best, stats=RunStats(), trained={"untrained": list(untrained)})


def test_completed_only_for_what_the_strategy_planned_and_a_checkpoint_of_its_own(tmp_path):
    from omegaconf import OmegaConf

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    mine = run_dir / "checkpoints" / "epoch_003.ckpt"
    mine.write_bytes(b"x")
    elsewhere = tmp_path / "other" / "checkpoints" / "epoch_009.ckpt"
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(b"x")
    cfg = OmegaConf.create({"paths": {"output_dir": str(run_dir)}, "trainer": {}})
    assert run_status(cfg, _outcome(str(mine))) == ("completed", None)
    assert run_status(cfg, _outcome(None)) == ("completed", None)  # no checkpoint callback: its final weights
    status, error = run_status(cfg, _outcome(str(mine), untrained=["backbone.g07"]))
    assert status == "failed" and "backbone.g07" in error and "took no optimizer step" in error
    status, error = run_status(cfg, _outcome(str(elsewhere)))
    assert status == "failed" and "not one this run wrote" in error
    debug = OmegaConf.create({"paths": {"output_dir": str(run_dir)}, "trainer": {"fast_dev_run": True}})
    assert run_status(debug, _outcome(None))[0] == "debug"


# --- the confusion matrix (schema 3) ------------------------------------------------------------

CONFUSION = {"split": "test", "classes": ["cat", "dog"], "matrix": [[3, 1], [0, 4]]}


def test_schema_2_files_load_without_a_confusion_matrix(tmp_path):
    schema_2 = {**SCHEMA_1, "schema": 2, "config": {**SCHEMA_1["config"], "variant": "lbfgs", "modality": "image"}}
    schema_2.pop("a_key_from_the_future")
    (tmp_path / "metrics.json").write_text(json.dumps(schema_2))
    record = read_record(tmp_path)
    assert record.schema == 2 and record.confusion is None and record.test == SCHEMA_1["test"]
    assert "confusion" not in record.extra


def test_the_confusion_matrix_round_trips(tmp_path):
    record = RunRecord(confusion={**CONFUSION, "picture": "confusion_matrix.png"})
    record.write(tmp_path / "metrics.json")
    back = read_record(tmp_path)
    assert SCHEMA_VERSION >= 3 and back.confusion == record.confusion and back.to_dict() == record.to_dict()


def test_schema_3_files_load_without_per_class_reliability_or_calibration(tmp_path):
    schema_3 = {**SCHEMA_1, "schema": 3, "confusion": CONFUSION}
    schema_3.pop("a_key_from_the_future")
    (tmp_path / "metrics.json").write_text(json.dumps(schema_3))
    record = read_record(tmp_path)
    assert record.schema == 3 and record.confusion == CONFUSION
    assert record.per_class is None and record.reliability is None and record.calibration is None
    assert not {"per_class", "reliability", "calibration"} & set(record.extra)


def test_per_class_reliability_and_calibration_round_trip(tmp_path):
    table = [{"lower": 0.0, "upper": 1.0, "count": 8, "confidence": 0.8, "accuracy": 0.875}]
    record = RunRecord(
        per_class={"test": [{"class": "cat", "precision": 1.0, "recall": 0.75, "f1": 6 / 7, "support": 4}]},
        reliability={"bins": 1, "test": {"ece": 0.075, "table": table}, "picture": "reliability.png"},
        calibration={"method": "temperature", "temperature": 1.5, "test": {"before": {"ece": 0.075}, "after": {"ece": 0.02}}},
    )
    record.write(tmp_path / "metrics.json")
    back = read_record(tmp_path)
    assert SCHEMA_VERSION == back.schema == 4 and back.to_dict() == record.to_dict()
    assert back.calibration["temperature"] == 1.5 and back.reliability["test"]["table"] == table


def test_the_record_draws_the_reliability_diagram_beside_the_matrix(tmp_path):
    from transferlab.engine.recording import write_record
    from transferlab.record import RunConfig

    table = [{"lower": 0.5, "upper": 1.0, "count": 8, "confidence": 0.8, "accuracy": 0.875}]
    record = RunRecord(test={"acc": 0.875, "ece": 0.075}, confusion=dict(CONFUSION),
                       reliability={"bins": 1, "test": {"ece": 0.075, "table": table}},
                       config=RunConfig(model="timm", model_name="resnet10t", strategy="partial", data="synthetic"))
    write_record(_record_config(tmp_path), record)
    assert (tmp_path / "run" / "reliability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_record(tmp_path / "run").reliability["picture"] == "reliability.png"


def _record_config(tmp_path):
    from omegaconf import OmegaConf

    return OmegaConf.create({"paths": {"output_dir": str(tmp_path / "run")}})


def test_the_record_names_its_picture_once_it_is_drawn(tmp_path):
    from transferlab.engine.recording import write_record
    from transferlab.record import RunConfig

    record = RunRecord(test={"acc": 0.875, "f1_macro": 0.87}, confusion=dict(CONFUSION),
                       config=RunConfig(model="timm", model_name="resnet10t", strategy="partial", data="synthetic"))
    write_record(_record_config(tmp_path), record)
    picture = tmp_path / "run" / "confusion_matrix.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert read_record(tmp_path / "run").confusion == {**CONFUSION, "picture": "confusion_matrix.png"}


def test_a_failing_draw_costs_a_warning_not_the_record(tmp_path, monkeypatch, caplog):
    from transferlab.engine import recording

    def broken(*args, **kwargs):
        raise RuntimeError("no fonts on this machine")

    monkeypatch.setattr(recording, "draw_confusion", broken)
    record = RunRecord(test={"acc": 0.875}, confusion=dict(CONFUSION))
    with caplog.at_level(logging.WARNING, logger="transferlab.engine.recording"):
        recording.write_record(_record_config(tmp_path), record)
    back = read_record(tmp_path / "run")
    assert back is not None and back.test == {"acc": 0.875}
    assert back.confusion == CONFUSION  # the counts are kept, and no picture is named
    assert not (tmp_path / "run" / "confusion_matrix.png").exists()
    assert "could not draw the confusion matrix" in caplog.text and "no fonts on this machine" in caplog.text
