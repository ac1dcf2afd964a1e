"""Strategies that train on unlabelled batches beside the labelled ones: fixmatch and dann.

The paired loader (data/unlabeled/batches.py): every unlabelled image once per pass, batches a pure
function of (seed, step), the labelled order exactly the plain run's, DDP ranks sharing each
step's stretch. FixMatch's mask and loss on a hand-made batch, its strong view, and whole runs on
tiny models, resumed exactly. DANN's domain classifier trains with the head, behind a reversed
gradient whose weight ramps up.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from test_bad_input import error_line, run
from test_resume import RUN, assert_same_results, plain_and_resumed
from test_strategies import composed

from transferlab import train as train_cli
from transferlab.data.arrays import UNLABELED, ImageArrays
from transferlab.data.batch import Batch, SemiBatch, concat
from transferlab.data.loaders import EpochBatches
from transferlab.data.images.strong_augment import OPS, StrongAugment, cutout
from transferlab.data.unlabeled.batches import PairedBatches, UnlabeledStream, paired_loader
from transferlab.engine.assemble import make_run
from transferlab.errors import ConfigError
from transferlab.finetune.optim import param_groups
from transferlab.finetune.strategies.dann import reversal_ramp
from transferlab.finetune.strategies.fixmatch import fixmatch_loss

SEMI = ["data.unlabeled=rest", "data.samples_per_class=4", "data.source_args.train_per_class=16"]


# --- the unlabelled stream ---------------------------------------------------------------------
def test_every_unlabelled_image_once_per_pass_and_each_step_a_pure_function_of_the_step():
    stream = UnlabeledStream(size=10, per_step=4, seed=3)
    steps = [stream.at_step(s) for s in range(5)]  # 20 indices: exactly two passes
    first, second = torch.cat(steps)[:10], torch.cat(steps)[10:]
    assert sorted(first.tolist()) == list(range(10)) and sorted(second.tolist()) == list(range(10))
    assert not torch.equal(first, second)  # a new permutation each pass
    fresh = UnlabeledStream(size=10, per_step=4, seed=3)
    assert torch.equal(fresh.at_step(3), steps[3])  # no state: a resumed run draws the same batch
    assert not torch.equal(UnlabeledStream(size=10, per_step=4, seed=4).at_step(0), steps[0])


def test_ddp_ranks_share_out_each_steps_stretch():
    whole = UnlabeledStream(size=30, per_step=6, seed=0)
    shards = [UnlabeledStream(size=30, per_step=6, seed=0, rank=r, world_size=2) for r in (0, 1)]
    for step in range(4):
        a, b = (s.at_step(step) for s in shards)
        assert len(a) == len(b) == 3
        assert sorted(torch.cat([a, b]).tolist()) == sorted(whole.at_step(step).tolist())


def test_labelled_batches_are_the_plain_runs_and_steps_continue_across_epochs():
    plain = EpochBatches(20, 4, shuffle=True, seed=5)
    paired = PairedBatches(EpochBatches(20, 4, shuffle=True, seed=5), UnlabeledStream(size=50, per_step=8, seed=5))
    for epoch in (0, 1):
        plain.set_epoch(epoch)
        paired.set_epoch(epoch)
        pairs = list(paired)
        assert [lab for lab, _ in pairs] == list(plain)
        assert [u for _, u in pairs] == [paired.unlabeled.at_step(epoch * 5 + k).tolist() for k in range(5)]


def test_paired_loader_gathers_both_and_refuses_a_pool_smaller_than_a_step():
    labeled = ImageArrays(torch.arange(8, dtype=torch.uint8).view(8, 1, 1, 1).expand(8, 1, 2, 2).contiguous(), torch.arange(8) % 2)
    pool = ImageArrays(torch.full((12, 1, 2, 2), 200, dtype=torch.uint8), torch.full((12,), UNLABELED))
    (batch, *_) = list(paired_loader(labeled, pool, trainer=None, batch_size=4, ratio=2, seed=0))
    assert isinstance(batch, SemiBatch) and len(batch.labeled) == 4 and len(batch.unlabeled) == 8
    assert (batch.unlabeled.labels == UNLABELED).all() and (batch.unlabeled.images == 200).all()
    assert torch.equal(batch.labeled.labels, batch.labeled.images[:, 0, 0, 0].long() % 2)
    with pytest.raises(ConfigError, match=r"strategy.unlabeled_ratio=4 x data.batch_size=4 asks for 16 .* the pool holds 12"):
        paired_loader(labeled, pool, trainer=None, batch_size=4, ratio=4, seed=0)


def test_concat_pads_token_ids_and_their_mask():
    a = Batch(input_ids=torch.tensor([[5, 6, 7]]), attention_mask=torch.ones(1, 3, dtype=torch.long))
    b = Batch(input_ids=torch.tensor([[8]]), attention_mask=torch.ones(1, 1, dtype=torch.long))
    joined = concat([a, b])
    assert joined.input_ids.tolist() == [[5, 6, 7], [8, 0, 0]] and joined.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    images = concat([Batch(images=torch.zeros(2, 3, 4, 4)), Batch(images=torch.ones(3, 3, 4, 4))])
    assert images.images.shape == (5, 3, 4, 4)


# --- fixmatch ------------------------------------------------------------------------------------
def test_fixmatch_mask_and_loss_on_a_hand_made_batch():
    # Three images: confident (0.97) for class 1, unsure, confident (0.96) for class 0.
    weak = torch.log(torch.tensor([[0.01, 0.97, 0.02], [0.40, 0.30, 0.30], [0.96, 0.02, 0.02]]))
    strong = torch.tensor([[0.0, 2.0, 0.0], [5.0, 0.0, 0.0], [1.0, 1.0, 1.0]], requires_grad=True)
    loss, mask = fixmatch_loss(weak, strong, threshold=0.95)
    assert mask.tolist() == [1.0, 0.0, 1.0]
    expected = (-F.log_softmax(strong[0], -1)[1] - F.log_softmax(strong[2], -1)[0]) / 3  # averaged over all three
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert strong.grad[1].abs().sum() == 0  # the unsure image pulls nothing
    _, none = fixmatch_loss(weak, strong.detach(), threshold=0.99)
    assert none.sum() == 0
    weak_leaf = weak.clone().requires_grad_(True)
    fixmatch_loss(weak_leaf, strong.detach().requires_grad_(True), 0.95)[0].backward()
    assert weak_leaf.grad is None  # the pseudo-label is a target, not a path for gradients


def test_strong_view_is_seeded_in_range_and_changes_every_image():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 12, 12)
    aug = StrongAugment(num_ops=2, cutout=0.5)
    torch.manual_seed(7)
    a = aug(x)
    torch.manual_seed(7)
    b = aug(x)
    torch.testing.assert_close(a, b)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert all(not torch.equal(a[i], x[i]) for i in range(len(x)))  # cutout at least
    for op in OPS:  # each operation alone keeps the range and the shape
        out = op(x.clone(), torch.full((16,), 0.8)).clamp(0, 1)
        assert out.shape == x.shape and torch.isfinite(out).all(), op.__name__
    square = cutout(torch.zeros(1, 1, 10, 10), 0.4)
    assert (square == 0.5).sum() > 0 and set(square.unique().tolist()) <= {0.0, 0.5}


def test_fixmatch_step_reads_no_unlabelled_label_and_uses_both_views(tmp_path):
    cfg = composed(tmp_path, "strategy=fixmatch", "strategy.unlabeled_ratio=2", "strategy.probe_init=false", *SEMI)
    r = make_run(cfg)
    dm = r.datamodule
    assert dm.unlabeled_ratio == 2 and dm.strong_augment is not None
    (raw, *_) = list(dm.train_dataloader())
    assert (raw.unlabeled.labels == UNLABELED).all() and len(raw.unlabeled) == 2 * len(raw.labeled)
    torch.manual_seed(0)
    batch = dm.on_after_batch_transfer(raw, 0)
    weak, strong = batch.views()
    assert weak.images.dtype == torch.float32 and not torch.allclose(weak.images, strong.images)
    calls = []
    r.module.log = r.module.log_dict = lambda *a, **k: calls.append(a[0])
    loss = r.module.training_step(batch, 0)  # a label of -1 read by cross-entropy would raise here
    assert torch.isfinite(loss) and "train/unlabeled_loss" in calls and "train/pseudo_label_rate" in calls


def test_fixmatch_composes_with_the_block_plan(tmp_path):
    cfg = composed(tmp_path, "strategy=fixmatch", "strategy.unfreeze_top=2", "strategy.probe_init=false", *SEMI)
    plan = make_run(cfg).module.plan
    assert plan.trainable_groups(0) == [plan.num_groups - 2, plan.num_groups - 1]


@pytest.mark.slow
def test_fixmatch_run_completes_and_resumes_exactly(tmp_path):
    semi = ["strategy=fixmatch", "strategy.unlabeled_ratio=2", "strategy.threshold=0.3", "data.unlabeled=rest",
            "data.samples_per_class=8", "data.source_args.train_per_class=24"]
    base = [a for a in RUN if not a.startswith("strategy")] + semi
    p, r = plain_and_resumed(tmp_path, base, "fm")
    assert r["status"] == p["status"] == "completed" and r["config"]["strategy"] == "fixmatch"
    assert_same_results(r, p)
    assert p["data_sizes"]["unlabeled"] > 0


# --- dann ----------------------------------------------------------------------------------------
def test_reversal_weight_ramps_from_zero_towards_one():
    assert reversal_ramp(0.0, 10) == 0.0
    assert reversal_ramp(1.0, 10) == pytest.approx(2 / (1 + math.exp(-10)) - 1)
    assert reversal_ramp(0.1, 10) < reversal_ramp(0.5, 10) < reversal_ramp(1.0, 10) < 1


def test_dann_domain_classifier_trains_with_the_head_and_reverses_into_the_features(tmp_path):
    cfg = composed(tmp_path, "strategy=dann", "strategy.hidden=16", *SEMI)
    r = make_run(cfg)
    module = r.module
    groups, _ = param_groups(module.plan, module.backbone, module.head, lr=1e-3, weight_decay=0.05)
    strategy_params = {id(p) for g in groups if g["name"].startswith("strategy") for p in g["params"]}
    assert strategy_params == {id(p) for p in module.strategy_state.parameters()}
    assert any(k.startswith("strategy_state.") for k in module.state_dict())  # in checkpoints
    module.log = module.log_dict = lambda *a, **k: None
    module.total_steps = 10
    module.strategy_state.eval()  # no dropout: the gradients below are exact
    features = torch.randn(4, module.encoder.num_features, requires_grad=True)
    target = torch.randn(4, module.encoder.num_features, requires_grad=True)
    # The gradient reaching the features is the domain loss's own gradient, reversed and scaled.
    weight = r.strategy.reversal(5, 10)
    type(module).global_step = property(lambda self: 5)
    try:
        loss = r.strategy.unlabeled_loss(module, features, [target])
        (reversed_grad,) = torch.autograd.grad(loss, features, retain_graph=True)
        joined = torch.cat([features, target])
        plain = F.binary_cross_entropy_with_logits(module.strategy_state(joined).squeeze(-1), torch.cat([torch.zeros(4), torch.ones(4)]))
        (plain_grad,) = torch.autograd.grad(plain, features)
    finally:
        del type(module).global_step
    torch.testing.assert_close(reversed_grad, -weight * plain_grad)


# --- bad input -----------------------------------------------------------------------------------
TINY_RUN = ["model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
            "trainer.accelerator=cpu", "trainer.max_epochs=1",
            "data.samples_per_class=4", "data.source_args.train_per_class=16"]


@pytest.mark.parametrize("args, message", [
    (["strategy=fixmatch"], "strategy=fixmatch learns from unlabelled images, and data.unlabeled is null"),
    (["strategy=dann"], "strategy=dann learns from unlabelled images, and data.unlabeled is null"),
    (["strategy=fixmatch", "data.unlabeled=rest", "model.head.type=mlp"], "strategy.probe_init=true starts from a linear probe"),
    (["strategy=fixmatch", "data.unlabeled=rest", "strategy.threshold=1.5"], "strategy.threshold=1.5"),
    (["strategy=fixmatch", "data.unlabeled=rest", "strategy.unlabeled_ratio=0"], "strategy.unlabeled_ratio=0"),
    (["strategy=dann", "data.unlabeled=rest", "strategy.unfreeze_top=0"], "trains no block group"),
    (["strategy=fixmatch", "data.unlabeled=rest", "data.unlabeled_max=3"], "asks for"),
])
def test_bad_semi_supervised_settings_name_the_fix(tmp_path, monkeypatch, capsys, args, message):
    # Each fails before a step is taken; fdr where the check does not need the epochs.
    debug = [] if "unfreeze_top=0" in " ".join(args) else ["debug=fdr"]
    line = error_line(*run(train_cli.main, [*TINY_RUN, *debug, *args], tmp_path, monkeypatch, capsys)[::2])
    assert message in line, line


def test_fixmatch_refuses_text_and_dann_takes_both():
    from transferlab.finetune.strategies import build_strategy

    with pytest.raises(ConfigError, match="strategy=fixmatch works on images, and this run's model takes texts"):
        build_strategy({"name": "fixmatch"}).check_modality("text")
    for modality in ("image", "text"):
        build_strategy({"name": "dann"}).check_modality(modality)


def test_a_strategy_that_learns_from_labels_alone_does_not_load_the_pool(tmp_path, caplog):
    r = make_run(composed(tmp_path, "strategy=partial", *SEMI))
    assert "unlabeled" not in r.datamodule.splits and r.datamodule.unlabeled_ratio == 0
    assert "strategy=partial learns from labelled images only, so the pool is not loaded" in caplog.text
