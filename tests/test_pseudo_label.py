"""strategy=pseudo_label: self-training of the L-BFGS probe on cached features.

Hand-made probabilities check the selection (threshold, per-class cap); blobs check the rounds
(never worse on validation than round 0, more rounds never worse than fewer) and the sample
weights; tiny synthetic runs check the command end to end and the bad-input errors.
"""

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from test_bad_input import error_line, run
from transferlab import CONFIG_DIR
from transferlab import train as train_cli
from transferlab.engine.assemble import make_run
from transferlab.engine.builders import make_strategy
from transferlab.errors import ConfigError, DataError
from transferlab.finetune.linear_probe import fit_logistic_regression
from transferlab.finetune.self_training import select_pseudo_labels, self_train
from transferlab.finetune.temperature import fit_temperature
from transferlab.utils.resolvers import register

register()

TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "data.source_args.train_per_class=24",
    "data.source_args.test_per_class=8", "data.val_per_class=6", "data.samples_per_class=4", "data.batch_size=8",
    "strategy.probe_weight_decays=[1e-3,1e-1]",
]


def composed(tmp_path, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}",
                                          f"paths.root_dir={tmp_path}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


# --- selection -----------------------------------------------------------------------------------
def test_threshold_keeps_only_confident_predictions():
    probs = torch.tensor([
        [0.95, 0.05, 0.00],  # class 0, kept
        [0.50, 0.40, 0.10],  # not confident
        [0.05, 0.91, 0.04],  # class 1, kept
        [0.10, 0.00, 0.90],  # exactly at the threshold: not above it
        [0.00, 0.01, 0.99],  # class 2, kept
    ])
    idx, labels = select_pseudo_labels(probs, threshold=0.9)
    assert idx.tolist() == [0, 2, 4] and labels.tolist() == [0, 1, 2]
    idx, _ = select_pseudo_labels(probs, threshold=0.0)
    assert idx.tolist() == [0, 1, 2, 3, 4]


def test_per_class_cap_keeps_each_class_most_confident():
    confidence = torch.tensor([0.97, 0.99, 0.93, 0.95, 0.96, 0.92, 0.98])
    cls = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    probs = torch.zeros(7, 3)
    probs[torch.arange(7), cls] = confidence
    probs[torch.arange(7), (cls + 1) % 3] = 1 - confidence
    idx, labels = select_pseudo_labels(probs, threshold=0.9, per_class_cap=2)
    assert idx.tolist() == [0, 1, 4, 5, 6]  # class 0's two best (0.99, 0.97); classes 1 and 2 under the cap
    assert torch.bincount(labels, minlength=3).max() <= 2


# --- rounds --------------------------------------------------------------------------------------
def _blobs(n_per_class, seed, num_classes=4, dim=16):
    centres = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(123)) * 1.0
    y = torch.arange(num_classes).repeat_interleave(n_per_class)
    x = centres[y] + torch.randn(len(y), dim, generator=torch.Generator().manual_seed(seed)) * 1.2
    return x, y


def test_rounds_never_lower_validation_accuracy_and_respect_the_cap():
    train_x, train_y = _blobs(3, seed=1)
    val_x, val_y = _blobs(40, seed=2)
    pool_x, _ = _blobs(150, seed=3)  # its labels are never passed
    kw = dict(threshold=0.5, per_class_cap=60, grid=[1e-2, 1.0])
    results = [self_train(train_x, train_y, val_x, val_y, pool_x, 4, rounds=r, **kw) for r in (1, 2, 3)]
    round0 = results[0].rounds[0]["val_acc"]
    accs = [r.probe.val_acc for r in results]
    assert all(a >= round0 for a in accs)
    assert accs == sorted(accs)  # each run repeats the shorter one's rounds, then may find a better one
    assert accs[-1] > round0  # 3 labelled blobs per class: the pool's pseudo-labels move the boundary the right way
    longest = results[-1]
    assert [r["round"] for r in longest.rounds] == [0, 1, 2, 3] and longest.rounds[0]["kept"] == 0
    for row in longest.rounds[1:]:
        assert 0 < row["kept"] <= 4 * 60 and max(row["kept_per_class"]) <= 60
    assert longest.probe.val_acc == longest.rounds[longest.chosen_round]["val_acc"]
    summary = longest.summary()["pseudo_label"]
    assert summary["unlabeled"] == len(pool_x) and summary["chosen_round"] == longest.chosen_round


def test_a_threshold_no_prediction_passes_stops_at_round_0():
    train_x, train_y = _blobs(3, seed=1)
    val_x, val_y = _blobs(10, seed=2)
    result = self_train(train_x, train_y, val_x, val_y, _blobs(5, seed=3)[0], 4, rounds=3, threshold=0.999999, grid=[10.0])
    assert result.chosen_round == 0 and result.rounds[1]["kept"] == 0 and len(result.rounds) == 2


def test_temperature_undoes_a_scaling_of_the_logits_and_keeps_the_argmax():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 5, generator=g) * 2
    y = torch.multinomial(torch.softmax(z, 1), 1, generator=g).flatten()  # labels as confident as softmax(z) says
    assert abs(fit_temperature(3 * z, y) - 3) < 0.3 and abs(fit_temperature(z / 2, y) - 0.5) < 0.05


def test_calibration_lets_a_flat_probe_pass_the_threshold():
    train_x, train_y = _blobs(3, seed=1)
    val_x, val_y = _blobs(40, seed=2)
    pool_x, _ = _blobs(150, seed=3)
    kw = dict(rounds=1, threshold=0.9, grid=[30.0])  # a strong penalty: a flat softmax
    raw = self_train(train_x, train_y, val_x, val_y, pool_x, 4, calibrate=False, **kw)
    calibrated = self_train(train_x, train_y, val_x, val_y, pool_x, 4, calibrate=True, **kw)
    assert raw.rounds[1]["kept"] == 0 and raw.rounds[1]["temperature"] == 1.0
    assert calibrated.rounds[1]["kept"] > 0 and calibrated.rounds[1]["temperature"] < 1.0


def test_sample_weight_two_equals_the_example_twice():
    x, y = _blobs(5, seed=4)
    weight = torch.ones(len(y))
    weight[:3] = 2.0
    w1, b1, _, _ = fit_logistic_regression(x.double(), y, 4, 1e-2, sample_weight=weight)
    w2, b2, _, _ = fit_logistic_regression(torch.cat([x, x[:3]]).double(), torch.cat([y, y[:3]]), 4, 1e-2)
    torch.testing.assert_close(w1, w2, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b1, b2, atol=1e-5, rtol=1e-4)


# --- end to end ----------------------------------------------------------------------------------
def test_cli_end_to_end_records_the_pool_and_each_round(tmp_path, monkeypatch, capsys):
    code, out, err = run(train_cli.main, [*TINY, "strategy=pseudo_label", "data.unlabeled=rest", "strategy.threshold=0.5",
                                          f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    (path,) = (tmp_path / "logs").rglob("metrics.json")
    m = json.loads(path.read_text())
    assert m["status"] == "completed" and m["config"]["strategy"] == "pseudo_label"
    assert m["data_sizes"] == {"train": 16, "val": 24, "test": 32, "unlabeled": 4 * (24 - 6 - 4)}
    pseudo = m["probe"]["pseudo_label"]
    assert pseudo["unlabeled"] == m["data_sizes"]["unlabeled"] and [r["round"] for r in pseudo["rounds"]] == [0, 1, 2]
    assert all(r["kept"] == sum(r["kept_per_class"]) for r in pseudo["rounds"])
    assert m["probe"]["val_acc"] == max(r["val_acc"] for r in pseudo["rounds"] if r["val_acc"] is not None)
    assert abs(m["val"]["acc"] - m["probe"]["val_acc"]) < 1e-6  # the kept round is the head validated and tested
    assert m["trained"]["first_phase"] == "lbfgs" and m["params"]["trainable"] == 512 * 4 + 4
    assert m["feature_cache"]["built"] == 4  # train, unlabeled, val, test: the pool is one more cached split
    assert "test accuracy" in out

    from transferlab.eval import evaluate

    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        eval_cfg = compose("eval", overrides=[f"ckpt_path={m['best_checkpoint']}", "trainer.accelerator=cpu",
                                              f"paths.output_dir={tmp_path / 'eval'}", "+trainer.enable_progress_bar=false"])
    GlobalHydra.instance().clear()
    # The kept round's head in an ordinary checkpoint: eval.py scores it through the backbone on images.
    assert abs(evaluate(eval_cfg)["metrics"]["acc"] - m["test"]["acc"]) < 1e-3


def test_bad_input_names_the_fix(tmp_path, monkeypatch, capsys):
    code, _, err = run(train_cli.main, [*TINY, "strategy=pseudo_label", "+trainer.fast_dev_run=true"], tmp_path, monkeypatch, capsys)
    assert "data.unlabeled is null: set data.unlabeled=rest" in error_line(code, err)
    with pytest.raises(ConfigError, match="are both set: set one of them to null"):
        make_strategy(composed(tmp_path, "strategy=pseudo_label", "strategy.per_class_cap=5", "strategy.per_class_fraction=0.5"))
    with pytest.raises(ConfigError, match="model.head.type=mlp: use model.head.type=linear"):
        make_strategy(composed(tmp_path, "strategy=pseudo_label", "model.head.type=mlp"))
    with pytest.raises(ConfigError, match="strategy.rounds=0 is outside its range"):
        make_strategy(composed(tmp_path, "strategy=pseudo_label", "strategy.rounds=0"))
    with pytest.raises(DataError, match="data.unlabeled='all' is unknown: use rest"):
        make_run(composed(tmp_path, "strategy=pseudo_label", "data.unlabeled=all"))
