"""Whether a run's probabilities mean anything: ECE, NLL and Brier against values worked out by
hand, the reliability table and diagram, temperature scaling on validation (it lowers NLL, never
moves an argmax, stops at its bound on a separable split), and eval.calibrate=temperature end to
end: calibrated.ckpt, the record's entry, and eval.py and the exported network applying it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torchmetrics.classification import MulticlassCalibrationError

from test_bad_input import error_line, run
from test_confusion import IMAGE_RUN, _train, assert_png

from transferlab.finetune.temperature import T_BOUNDS, fit_temperature
from transferlab.models.heads import build_head, scaled_head
from transferlab.utils.confusion import per_class_scores
from transferlab.utils.probabilities import (
    N_BINS, ReliabilityBins, draw_reliability, ece_of_table, probability_scores, reliability_figure, reliability_of,
)

# Four two-class examples whose softmax is (0.75, 0.25), (0.25, 0.75), (0.9, 0.1), (0.35, 0.65);
# all are class 0, so the first and third are right and the other two wrong.
HAND_LOGITS = torch.tensor([[math.log(3), 0.0], [0.0, math.log(3)], [math.log(9), 0.0], [0.0, math.log(0.65 / 0.35)]])
HAND_LABELS = torch.tensor([0, 0, 0, 0])


def test_ece_nll_and_brier_of_hand_made_logits():
    scores = probability_scores(HAND_LOGITS, HAND_LABELS)
    # Confidences 0.75, 0.75 (one right, one wrong), 0.9 (right), 0.65 (wrong), each pair in its own bin:
    # 2/4 * |0.75 - 0.5| + 1/4 * |0.9 - 1| + 1/4 * |0.65 - 0|.
    assert scores["ece"] == pytest.approx(0.125 + 0.025 + 0.1625)
    # -(ln 0.75 + ln 0.25 + ln 0.9 + ln 0.35) / 4
    assert scores["nll"] == pytest.approx((0.287682 + 1.386294 + 0.105361 + 1.049822) / 4, abs=1e-6)
    # sum over classes of (p - onehot)^2: 0.125, 1.125, 0.02, 0.845
    assert scores["brier"] == pytest.approx((0.125 + 1.125 + 0.02 + 0.845) / 4)


def test_the_reliability_table_holds_each_bin_and_gives_the_same_ece():
    bins = reliability_of(HAND_LOGITS, HAND_LABELS)
    table = bins["table"]
    assert len(table) == N_BINS == 15 and table[0]["lower"] == 0.0 and table[-1]["upper"] == 1.0
    filled = {i: r for i, r in enumerate(table) if r["count"]}
    assert set(filled) == {9, 11, 13}  # 0.65, 0.75 and 0.9 of 15 equal bins
    assert filled[11] == {"lower": pytest.approx(11 / 15), "upper": pytest.approx(12 / 15), "count": 2,
                          "confidence": pytest.approx(0.75), "accuracy": 0.5}
    assert table[0]["confidence"] is None and table[0]["accuracy"] is None
    assert ece_of_table(table) == pytest.approx(bins["ece"])


def test_streamed_batches_sum_to_the_whole_and_agree_with_torchmetrics():
    gen = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(500, 7, generator=gen) * 3, torch.randint(0, 7, (500,), generator=gen)
    streamed = ReliabilityBins()
    for part in range(0, 500, 64):  # a partial last batch, as eval loaders give
        streamed.update(logits[part:part + 64], labels[part:part + 64])
    ece = streamed.compute()["ece"]
    assert ece == pytest.approx(reliability_of(logits, labels)["ece"], abs=1e-12)
    reference = MulticlassCalibrationError(num_classes=7, n_bins=N_BINS, norm="l1")
    assert ece == pytest.approx(float(reference(logits.softmax(-1), labels)), abs=1e-5)


def test_the_reliability_diagram_names_the_ece_and_is_a_png(tmp_path):
    table = reliability_of(HAND_LOGITS, HAND_LABELS)["table"]
    fig = reliability_figure(table, "m · s")
    assert "ECE 0.3125" in fig.axes[0].get_title() and fig.axes[0].get_title().startswith("m · s")
    assert_png(draw_reliability(table, tmp_path / "r.png"))


def test_per_class_precision_recall_and_f1_from_the_matrix():
    # rows true, columns predicted; class c is never predicted and never true
    rows = per_class_scores([[8, 2, 0], [4, 6, 0], [0, 0, 0]], ["a", "b", "c"])
    assert rows[0] == {"class": "a", "precision": 8 / 12, "recall": 0.8, "f1": 16 / 22, "support": 10}
    assert rows[1] == {"class": "b", "precision": 0.75, "recall": 0.6, "f1": 12 / 18, "support": 10}
    assert rows[2] == {"class": "c", "precision": None, "recall": None, "f1": None, "support": 0}
    never_predicted = per_class_scores([[5, 0], [5, 0]], ["x", "y"])[1]
    assert never_predicted["precision"] is None and never_predicted["recall"] == 0.0 and never_predicted["f1"] == 0.0


# --- temperature scaling ------------------------------------------------------------------------


def _overconfident(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels drawn from softmax(z), and the logits 4 z a head too sure of itself would give."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, 5, generator=gen)
    labels = torch.multinomial(z.softmax(-1), 1, generator=gen).squeeze(1)
    return 4 * z, labels


def test_temperature_fitted_on_val_lowers_test_nll_and_never_moves_an_argmax():
    val, test = _overconfident(2000, 0), _overconfident(2000, 1)
    t = fit_temperature(*val)
    assert t == pytest.approx(4.0, rel=0.15)  # the overconfidence put in
    before, after = probability_scores(*test), probability_scores(test[0] / t, test[1])
    assert after["nll"] < before["nll"] and after["ece"] < before["ece"] and after["brier"] < before["brier"]
    assert torch.equal((test[0] / t).argmax(-1), test[0].argmax(-1))


def test_temperature_is_the_nll_minimum():
    logits, labels = _overconfident(500, 2)
    t = fit_temperature(logits, labels)
    nll = lambda temp: float(torch.nn.functional.cross_entropy(logits.double() / temp, labels))  # noqa: E731
    assert nll(t) <= min(nll(t * 0.99), nll(t * 1.01))


def test_a_separable_val_split_sends_the_temperature_to_its_bound_not_to_zero():
    labels = torch.arange(6) % 3
    logits = torch.nn.functional.one_hot(labels, 3).double() * 5  # every example right, with a margin
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(T_BOUNDS[0], rel=1e-6) and t > 0
    assert fit_temperature(-logits, labels) == pytest.approx(T_BOUNDS[1], rel=1e-6)  # every one wrong: as flat as allowed


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_the_scaled_head_divides_the_logits_and_keeps_the_argmax(kind):
    torch.manual_seed(0)
    head = build_head(kind, 16, 4, hidden=8).eval()
    x = torch.randn(32, 16)
    with torch.no_grad():
        original = head(x)
        scaled = scaled_head(head, 1 / 2.5).eval()
        assert torch.allclose(scaled(x), original / 2.5, atol=1e-6)
        assert torch.equal(scaled(x).argmax(-1), original.argmax(-1))
        assert torch.equal(head(x), original)  # a copy is scaled, the trained head is left alone


# --- a run with eval.calibrate=temperature ----------------------------------------------------


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    monkeypatch = pytest.MonkeyPatch()
    try:
        m, run_dir = _train([*IMAGE_RUN, "eval.calibrate=temperature"], tmp_path_factory.mktemp("cal"), monkeypatch, None)
    finally:
        monkeypatch.undo()
    return m, run_dir


def test_a_calibrated_run_records_the_temperature_and_the_measures_before_and_after(calibrated_run):
    m, run_dir = calibrated_run
    assert m["status"] == "completed" and m["schema"] == 4
    cal = m["calibration"]
    assert cal["method"] == "temperature" and cal["fitted_on"] == "val"
    assert T_BOUNDS[0] <= cal["temperature"] <= T_BOUNDS[1]
    for split in ("val", "test"):
        for when in ("before", "after"):
            assert set(cal[split][when]) == {"acc", "ece", "nll", "brier"}
        assert cal[split]["after"]["acc"] == cal[split]["before"]["acc"]  # T moves no argmax
    assert cal["val"]["after"]["nll"] <= cal["val"]["before"]["nll"] + 1e-12  # T = 1 was a candidate
    # The before figures are the test the record reports, from the same logits.
    assert cal["test"]["before"]["acc"] == pytest.approx(m["test"]["acc"])
    for key in ("ece", "nll", "brier"):
        assert cal["test"]["before"][key] == pytest.approx(m["test"][key], abs=1e-5)
        assert key in m["val"]
    ckpt = torch.load(run_dir / "checkpoints" / "calibrated.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["transferlab"]["temperature"] == pytest.approx(cal["temperature"])
    tested = torch.load(m["best_checkpoint"], map_location="cpu", weights_only=False)
    assert "temperature" not in tested["transferlab"]
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in tested["state_dict"].items())
    # per-class rows and the reliability diagram beside the confusion matrix
    assert [r["class"] for r in m["per_class"]["test"]] == m["confusion"]["classes"]
    assert sum(r["support"] for r in m["per_class"]["test"]) == m["data_sizes"]["test"]
    assert m["reliability"]["picture"] == "reliability.png" and len(m["reliability"]["test"]["table"]) == N_BINS
    assert m["reliability"]["test"]["ece"] == pytest.approx(m["test"]["ece"], abs=1e-6)
    assert_png(run_dir / "reliability.png")


def test_the_run_dir_loads_as_the_calibrated_model_and_eval_applies_the_temperature(calibrated_run, tmp_path, monkeypatch, capsys):
    from transferlab import eval as eval_cli
    from transferlab.inference.trained import load_trained

    m, run_dir = calibrated_run
    trained = load_trained(run_dir)
    t = m["calibration"]["temperature"]
    assert trained.checkpoint.name == "calibrated.ckpt" and trained.temperature == pytest.approx(t)
    x = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        plain = trained.module.head(trained.module.backbone(x))
        assert torch.allclose(trained.network()(x), plain / t, atol=1e-5)
    code, _, err = run(eval_cli.main, [f"ckpt_path={run_dir / 'checkpoints' / 'calibrated.ckpt'}"], tmp_path, monkeypatch,
                       capsys, "eval.py")
    assert code == 0, err[-2000:]
    out = json.loads(next(tmp_path.rglob("eval_metrics.json")).read_text())
    assert out["temperature"] == pytest.approx(t)
    assert out["metrics"]["acc"] == pytest.approx(m["test"]["acc"])  # unchanged by T
    for key in ("ece", "nll", "brier"):
        assert out["metrics"][key] == pytest.approx(m["calibration"]["test"]["after"][key], abs=1e-5)


def test_a_bad_calibrate_value_is_one_line_naming_the_fix(tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    code, _, err = run(train_cli.main, [*IMAGE_RUN, "eval.calibrate=platt"], tmp_path, monkeypatch, capsys)
    line = error_line(code, err)
    assert "eval.calibrate='platt'" in line and "none, temperature" in line
