"""Block groups, trainable sets, optimizer groups, lrs and norm modes, per strategy."""

import pytest
import torch
from torch import nn

from transferlab import CONFIG_DIR
from transferlab.errors import ConfigError
from transferlab.finetune.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from transferlab.finetune.plan import FinetunePlan
from transferlab.finetune.strategies import build_strategy
from transferlab.models.timm_backbone import TimmBackbone

EXPECTED_GROUPS = {"resnet": 5, "efficientnet": 8, "convnext": 6, "vit": 13}


def block_groups(model):
    return TimmBackbone(model, "test", "none", preprocess=None, channels_last=False).block_groups()


def plan_for(model, head=None, **kw):
    head = head if head is not None else nn.Linear(model.num_features, 3)
    return FinetunePlan(build_strategy(kw), block_groups(model), head)


@pytest.mark.parametrize("family", list(EXPECTED_GROUPS))
def test_groups_cover_every_parameter_once_bottom_to_top(tiny_models, family):
    model = tiny_models[family]
    groups = block_groups(model)
    assert len(groups) == EXPECTED_GROUPS[family]
    seen = [id(p) for g in groups for p in g.params]
    assert len(seen) == len(set(seen)) == len(list(model.parameters()))
    first, last = groups[0].param_names, groups[-1].param_names
    stem = {"resnet": "conv1", "efficientnet": "conv_stem", "convnext": "stem", "vit": "patch_embed"}[family]
    assert any(n.startswith(stem) for n in first)
    top = {"resnet": "layer4", "efficientnet": "bn2", "convnext": "head.norm", "vit": "norm."}[family]
    assert any(n.startswith(top) for n in last)


def trainable_groups(model, plan, epoch=0):
    plan.apply(model, training=True, epoch=epoch)
    return [g.index for g in plan.groups if all(p.requires_grad for p in g.params)], [
        g.index for g in plan.groups if any(p.requires_grad for p in g.params)
    ]


@pytest.mark.parametrize("family", list(EXPECTED_GROUPS))
def test_partial_trains_the_top_k_groups_on_every_family(tiny_models, family):
    model = tiny_models[family]
    n = EXPECTED_GROUPS[family]
    all_on, any_on = trainable_groups(model, plan_for(model, name="partial", unfreeze_top=2))
    assert all_on == any_on == [n - 2, n - 1]


def test_extract_full_scratch_trainable_sets(tiny_models):
    model = tiny_models["resnet"]
    assert trainable_groups(model, plan_for(model, name="extract")) == ([], [])
    assert trainable_groups(model, plan_for(model, name="full"))[0] == [0, 1, 2, 3, 4]
    assert trainable_groups(model, plan_for(model, name="scratch", pretrained=False))[0] == [0, 1, 2, 3, 4]


def test_gradual_unfreezes_top_down_at_milestones(tiny_models):
    model = tiny_models["efficientnet"]  # 8 groups
    plan = plan_for(model, name="gradual", unfreeze_top=None, milestones=[1, 3, 5])
    assert plan.trainable_groups(0) == []
    assert plan.trainable_groups(1) == [5, 6, 7]  # ceil(8 * 1/3) = 3 from the top
    assert plan.trainable_groups(2) == [5, 6, 7]
    assert plan.trainable_groups(3) == [2, 3, 4, 5, 6, 7]  # ceil(8 * 2/3) = 6
    assert plan.trainable_groups(5) == list(range(8))
    assert trainable_groups(model, plan, epoch=3)[0] == [2, 3, 4, 5, 6, 7]


def test_bad_strategy_values_name_the_fix(tiny_models):
    with pytest.raises(ConfigError, match="unfreeze_top=9 but this backbone has 5 block groups: use 0..5"):
        plan_for(tiny_models["resnet"], name="partial", unfreeze_top=9)
    choices = ", ".join(sorted(p.stem for p in (CONFIG_DIR / "strategy").glob("*.yaml")))
    with pytest.raises(ConfigError, match=f"use one of {choices}"):
        build_strategy({"name": "finetune"})
    with pytest.raises(ConfigError, match="needs strategy.milestones"):
        build_strategy({"name": "gradual", "milestones": []})


def test_optimizer_groups_hold_each_trainable_parameter_once_with_decayed_lrs(tiny_models):
    model = tiny_models["resnet"]
    head = nn.Linear(model.num_features, 3)
    plan = plan_for(model, head, name="partial", unfreeze_top=3, decay=0.5, lr=1e-2)
    plan.apply(model, training=True, epoch=0)
    groups, units = param_groups(plan, model, head, lr=1e-2, weight_decay=0.05)
    # Identity, not value: equal tensors (zero biases) must not be confused.
    in_opt = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in [*model.parameters(), *head.parameters()] if p.requires_grad]
    assert len(in_opt) == len(set(in_opt))
    assert set(in_opt) == set(trainable)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["head"] == pytest.approx(1e-2)
    assert lrs["backbone.g04"] == pytest.approx(1e-2 * 0.5)
    assert lrs["backbone.g03"] == pytest.approx(1e-2 * 0.25)
    assert lrs["backbone.g02"] == pytest.approx(1e-2 * 0.125)
    assert "backbone.g01" not in lrs and "backbone.g01.no_decay" not in lrs
    for g in groups:  # norms and biases are never decayed
        assert (g["weight_decay"] == 0) == g["name"].endswith(".no_decay")
        if g["name"].endswith(".no_decay"):
            assert all(p.ndim <= 1 for p in g["params"])


def test_vit_no_weight_decay_tensors_are_not_decayed(tiny_models):
    model = tiny_models["vit"]
    head = nn.Linear(model.num_features, 2)
    plan = plan_for(model, head, name="full")
    groups, _ = param_groups(plan, model, head, lr=1e-3, weight_decay=0.05)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.pos_embed) not in decayed and id(model.cls_token) not in decayed


def _steps(model, head, plan, optim_name, n=3):
    groups, units = param_groups(plan, model, head, lr=0.1, weight_decay=0.5)
    opt = build_optimizer(OptimConfig(name=optim_name, weight_decay=0.5, momentum=0.9), groups)
    for _ in range(n):
        x = torch.randn(4, 3, 32, 32)
        loss = head(model(x)).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("optim_name", ["adamw", "sgd"])
def test_frozen_groups_get_no_decay_no_momentum_no_grad_and_keep_bn_stats(tiny_models, optim_name):
    model = tiny_models["resnet"]
    head = nn.Linear(model.num_features, 3)
    # gradual: groups not yet unfrozen ARE in the optimizer (at lr 0): the dangerous case.
    plan = plan_for(model, head, name="gradual", milestones=[2], unfreeze_top=2)
    model.train()
    plan.apply(model, training=True, epoch=0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    _steps(model, head, plan, optim_name)
    after = model.state_dict()
    changed = [k for k in before if not torch.equal(before[k], after[k]) and "num_batches" not in k]
    assert changed == []  # weights, biases, BN affine and running stats all untouched
    assert all(p.grad is None for p in model.parameters())
    # once unfrozen, the top groups do train
    plan.apply(model, training=True, epoch=2)
    _steps(model, head, plan, optim_name)
    moved = {k.split(".")[0] for k, v in model.state_dict().items() if not torch.equal(before[k], v) and "num_batches" not in k}
    assert moved == {"layer3", "layer4"}


def test_norm_policies(tiny_models):
    model = tiny_models["resnet"]
    bn_frozen = model.layer1[0].bn1
    bn_trained = model.layer4[0].bn1
    for policy, frozen_training in (("eval", False), ("train", True), ("affine_only", False)):
        plan = plan_for(model, name="partial", unfreeze_top=1, frozen_norm=policy)
        model.train()
        plan.apply(model, training=True, epoch=0)
        assert bn_trained.training
        assert bn_frozen.training is frozen_training
        assert bn_frozen.weight.requires_grad is (policy == "affine_only")
        assert not model.layer1[0].conv1.weight.requires_grad
        plan.apply(model, training=False, epoch=0)
        assert not bn_trained.training and not bn_frozen.training


def test_lr_schedule_is_a_pure_function_with_gradual_ramp(tiny_models):
    model = tiny_models["resnet"]
    head = nn.Linear(model.num_features, 3)
    plan = plan_for(model, head, name="gradual", milestones=[2], unfreeze_top=1, decay=0.5, lr=1.0,
                    unfreeze_lr_ratio=0.1, unfreeze_warmup_epochs=1.0)
    groups, units = param_groups(plan, model, head, lr=1.0, weight_decay=0.0)
    cfg = OptimConfig(warmup_epochs=0, schedule="constant")
    opt = build_optimizer(cfg, groups)
    sched = build_scheduler(opt, plan, units, cfg.clock(steps_per_epoch=10, total_steps=50))
    lrs = []
    for _ in range(40):
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    top = "backbone.g04"
    assert lrs[0]["head"] == pytest.approx(1.0)
    assert lrs[19][top] == 0.0  # frozen until epoch 2
    assert lrs[20][top] == pytest.approx(0.5 * 0.1)  # starts at the ratio of its decayed lr
    assert lrs[25][top] == pytest.approx(0.5 * (0.1 + 0.9 * 0.5))
    assert lrs[30][top] == pytest.approx(0.5)
    # a fresh scheduler restored from the state dict (as after resume) continues exactly
    assert sched.state_dict()["lr_lambdas"] == [None] * len(units)  # nothing of the plan is pickled
    opt2 = build_optimizer(cfg, param_groups(plan, model, head, lr=1.0, weight_decay=0.0)[0])
    sched2 = build_scheduler(opt2, plan, units, cfg.clock(steps_per_epoch=10, total_steps=50))
    sched2.load_state_dict(sched.state_dict())
    opt.step(), sched.step(), opt2.step(), sched2.step()
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    assert opt.param_groups[0]["lr"] > 0
