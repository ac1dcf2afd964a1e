"""setfit's pair loss and its two parts (encoder on pairs, head on detached features, then refit),
and the classical baselines (pixel_lr, tfidf_lr) run through the same harness as every strategy."""

import pickle

import pytest
import torch

from test_bad_input import error_line, run
from test_cli import metrics_of
from test_strategies import TINY, composed

from transferlab.engine.assemble import make_run
from transferlab.finetune.strategies.pixel_lr import pixels
from transferlab.finetune.strategies.setfit import pair_loss


# --- setfit ------------------------------------------------------------------------------------------
def test_pair_loss_on_a_hand_made_batch():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 3.0])
    labels = torch.tensor([0, 0, 1])
    # Same class identical, other class orthogonal: every pair already at its target.
    assert float(pair_loss(torch.stack([e1, 2 * e1, e2]), labels)) == pytest.approx(0.0, abs=1e-7)
    # Everything alike: the positive pair is right (0), both negatives are off by 1; each side weighs half.
    assert float(pair_loss(torch.stack([e1, e1, e1]), labels)) == pytest.approx(0.5)
    # Opposite directions within a class: cos -1, off by 2 -> 4; the two negatives at cos 0 add 0.
    assert float(pair_loss(torch.stack([e1, -e1, e2]), labels)) == pytest.approx(2.0)
    assert pair_loss(e1[None], torch.tensor([0])) is None
    only_positive = pair_loss(torch.stack([e1, e2]), torch.tensor([1, 1]))
    assert float(only_positive) == pytest.approx(1.0)  # cos 0 against target 1


def _grads(module, batch):
    module.zero_grad(set_to_none=True)
    module.plan.apply(module.backbone, training=True)
    module.train()
    loss = module.training_step(batch, 0)
    loss.backward()
    backbone = [p.grad for p in module.backbone.parameters() if p.requires_grad]
    head = [p.grad for p in module.head.parameters()]
    return backbone, head


def test_setfit_trains_the_encoder_only_through_pairs(tmp_path, monkeypatch):
    cfg = composed(tmp_path, "strategy=setfit")
    r = make_run(cfg)
    r.module.log_dict = r.module.log = lambda *a, **k: None  # no trainer attached
    batch = next(iter(r.datamodule.train_dataloader()))
    batch = r.datamodule.transform.apply(batch, train=True)
    backbone, head = _grads(r.module, batch)
    assert any(g is not None and float(g.abs().sum()) > 0 for g in backbone)
    assert all(g is not None and float(g.abs().sum()) > 0 for g in head)
    # Without the pair loss, nothing reaches the encoder: the head's cross-entropy stops at the features.
    monkeypatch.setattr(type(r.strategy), "feature_loss", lambda self, f, y: None)
    backbone, head = _grads(r.module, batch)
    assert all(g is None or float(g.abs().sum()) == 0 for g in backbone)
    assert all(g is not None and float(g.abs().sum()) > 0 for g in head)


def test_setfit_refit_needs_a_linear_head(tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    code, _, err = run(train_cli.main, [*TINY, "strategy=setfit", "model.head.type=mlp"], tmp_path, monkeypatch, capsys)
    assert "strategy=setfit refits a linear head, but model.head.type=mlp" in error_line(code, err)


# --- the classical baselines ---------------------------------------------------------------------------
def test_pixels_are_the_same_in_chunks_and_whole():
    images = torch.randint(0, 256, (10, 3, 32, 32), dtype=torch.uint8)
    whole = pixels(images, 8, grayscale=False, chunk=100)
    assert whole.shape == (10, 3 * 64) and float(whole.max()) <= 1.0
    assert torch.equal(pixels(images, 8, grayscale=False, chunk=3), whole)
    assert pixels(images, 8, grayscale=True).shape == (10, 64)


def test_pixel_lr_is_a_recorded_run_whose_pickle_scores_the_same(tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    code, out, err = run(train_cli.main, [*TINY, "strategy=pixel_lr", "strategy.pixel_size=8"], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    m, run_dir = metrics_of(tmp_path)
    assert m["status"] == "completed" and m["config"]["weights"] == "none"
    assert m["params"]["total"] == m["params"]["trainable"] == 4 * 64 + 4  # 4 classes x 8x8 grey pixels, + biases
    assert m["trained"] == {"optimizer_steps": 0, "units": {}, "untrained": [], "first_phase": "pixel_lr"}
    assert m["probe"]["weight_decay"] in [float(f"1e{k}") for k in range(-6, 2)]
    with open(m["best_checkpoint"], "rb") as f:
        model = pickle.load(f)
    cfg = composed(tmp_path / "again", "strategy=pixel_lr")
    test = make_run(cfg).datamodule.splits["test"]
    acc = float((model.log_proba(test).argmax(-1) == test.labels).float().mean())
    assert acc == pytest.approx(m["test"]["acc"], abs=1e-6) and m["test"]["acc"] > 0.4
    assert "pixel_lr" in out and "test accuracy" in out
    matrix = torch.tensor(m["confusion"]["matrix"])
    assert int(matrix.sum()) == len(test) and float(matrix.trace() / matrix.sum()) == pytest.approx(m["test"]["acc"], abs=1e-6)
    assert (run_dir / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_baseline_for_the_other_modality_is_one_line(tmp_path, monkeypatch, capsys):
    from transferlab import train as train_cli

    code, _, err = run(train_cli.main, [*TINY, "strategy=tfidf_lr"], tmp_path, monkeypatch, capsys)
    assert "strategy=tfidf_lr reads texts, and this run's model takes images: use strategy=pixel_lr" in error_line(code, err)
