"""The strategies beyond freezing: what each one trains, at which lr, and its hooks, on tiny models.

lp_ft's probe starts the head; two_phase and fine_tune follow their phases step by step; L2-SP pulls
towards the weights it started from and keeps them in checkpoints; LoRA trains its adapters and the
head only, and the merged network computes what the adapted one did.
"""

import math

import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from torch import nn

from transferlab import CONFIG_DIR
from transferlab.engine.assemble import make_run
from transferlab.engine.execute import make_feature_datamodule
from transferlab.finetune.optim import OptimConfig, build_optimizer, build_scheduler, param_groups
from transferlab.finetune.plan import FinetunePlan
from transferlab.finetune.strategies import build_strategy
from transferlab.finetune.strategies.lora import merge_adapters
from transferlab.models.timm_backbone import TimmBackbone
from transferlab.utils.resolvers import register

register()

TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "data.source_args.train_per_class=16",
    "data.source_args.test_per_class=8", "data.val_per_class=6", "data.batch_size=8", "trainer.max_epochs=3",
]


def composed(tmp_path, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[*TINY, f"paths.output_dir={tmp_path / 'run'}", f"paths.cache_dir={tmp_path / 'cache'}", *overrides])
    GlobalHydra.instance().clear()
    return cfg


def backbone_of(model):
    return TimmBackbone(model, "test", "none", preprocess=None, channels_last=False)


def plan_of(model, head, **knobs):
    return FinetunePlan(build_strategy(knobs), backbone_of(model).block_groups(), head)


def lrs_per_step(plan, model, head, steps_per_epoch, total, **optim):
    groups, units = param_groups(plan, model, head, lr=plan.config.lr, weight_decay=0.0)
    cfg = OptimConfig(**optim)
    opt = build_optimizer(cfg, groups)
    sched = build_scheduler(opt, plan, units, cfg.clock(steps_per_epoch, total))
    out = []
    for _ in range(total):
        out.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        sched.step()
    return out


# --- lp_ft -----------------------------------------------------------------------------------
def test_lp_ft_starts_the_head_from_the_probe_then_fine_tunes_everything(tmp_path):
    cfg = composed(tmp_path, "strategy=lp_ft", "strategy.probe_weight_decays=[1e-3,1e-1]")
    run = make_run(cfg)
    features = make_feature_datamodule(cfg, run)
    before = run.module.head[-1].weight.detach().clone()
    probe = run.strategy.first_phase(run.module.head, features)
    assert not torch.equal(run.module.head[-1].weight, before)
    torch.testing.assert_close(run.module.head[-1].weight.detach(), probe.weight)  # the head is the probe
    # Then every group trains, at one low lr (decay 1.0), with the norm statistics the probe saw:
    # batch statistics would change the features under the fitted head at the first step.
    plan = run.module.plan
    assert plan.trainable_groups(0) == list(range(plan.num_groups))
    assert {u.lr_scale for u in plan.units()} == {1.0}
    run.module.train()
    bn = run.module.backbone.layer4[0].bn1
    assert not bn.training and bn.weight.requires_grad


# --- two_phase -------------------------------------------------------------------------------
def test_two_phase_trains_the_head_alone_then_the_top_groups_at_lr_over_100(tiny_models):
    model, head = tiny_models["resnet"], nn.Linear(512, 3)
    plan = plan_of(model, head, name="two_phase", lr=1e-3, unfreeze_top=2, head_epochs=2, phase2_lr_ratio=0.01)
    lrs = lrs_per_step(plan, model, head, steps_per_epoch=5, total=20, warmup_epochs=0, schedule="constant")
    assert set(lrs[0]) == {"head", "head.no_decay", "backbone.g03", "backbone.g03.no_decay", "backbone.g04", "backbone.g04.no_decay"}
    for step in range(10):  # phase 1: the head at lr, the groups at 0
        assert lrs[step]["head"] == pytest.approx(1e-3) and lrs[step]["backbone.g04"] == 0.0 and lrs[step]["backbone.g03"] == 0.0
    for step in range(10, 20):  # phase 2: everything at lr / 100
        assert lrs[step]["head"] == pytest.approx(1e-5) and lrs[step]["backbone.g04"] == pytest.approx(1e-5)
    assert plan.trainable_groups(1) == [] and plan.trainable_groups(2) == [3, 4]


# --- fine_tune ---------------------------------------------------------------------------------
def test_fine_tune_one_cycle_head_first_then_discriminative_lrs_spread_100x(tiny_models):
    model, head = tiny_models["resnet"], nn.Linear(512, 3)  # 5 block groups
    plan = plan_of(model, head, name="fine_tune", lr=2e-3)
    spe, total = 10, 50
    lrs = lrs_per_step(plan, model, head, steps_per_epoch=spe, total=total)
    phase1 = [s["head"] for s in lrs[:spe]]
    assert all(s["backbone.g00"] == 0.0 and s["backbone.g04"] == 0.0 for s in lrs[:spe])
    assert phase1[0] == pytest.approx(2e-3 / 25) and max(phase1) <= 2e-3 and phase1 == sorted(phase1)  # warms up nearly all phase long
    phase2 = lrs[spe:]
    peak = {name: max(s[name] for s in phase2) for name in ("head", "backbone.g04", "backbone.g00")}
    assert peak["head"] == pytest.approx(1e-3, rel=0.02)  # base_lr / 2
    assert peak["backbone.g00"] == pytest.approx(1e-3 / 100, rel=0.02)  # the bottom group: lr_mult below the head
    ratios = [max(s[f"backbone.g0{i + 1}"] for s in phase2) / max(s[f"backbone.g0{i}"] for s in phase2) for i in range(4)]
    assert all(r == pytest.approx(100 ** (1 / 5), rel=1e-6) for r in ratios)  # geometric
    assert phase2[0]["head"] == pytest.approx(1e-3 / 5, rel=0.05)  # starts at lr / div
    assert phase2[-1]["head"] < phase2[0]["head"] / 50  # and anneals towards lr / div_final


# --- l2_sp -------------------------------------------------------------------------------------
def test_l2_sp_pulls_towards_the_starting_point_and_keeps_it_in_checkpoints(tmp_path):
    cfg = composed(tmp_path, "strategy=l2_sp", "strategy.alpha=0.5", "strategy.beta=0.0")
    run = make_run(cfg)
    module = run.module
    assert float(run.strategy.extra_loss(module).detach()) == 0.0  # at the starting point
    p = module.backbone.conv1[0].weight
    with torch.no_grad():
        p.add_(0.1)
    penalty = run.strategy.extra_loss(module)
    assert float(penalty.detach()) == pytest.approx(0.5 * 0.5 * 0.01 * p.numel(), rel=1e-4)
    (grad,) = torch.autograd.grad(penalty, p)
    torch.testing.assert_close(grad, torch.full_like(p, 0.5 * 0.1), rtol=1e-4, atol=1e-6)  # alpha (w - w0)
    state = module.state_dict()
    anchors = [k for k in state if k.startswith("strategy_state.")]
    assert len(anchors) == len(list(module.backbone.parameters()))
    # The penalty replaces weight decay.
    groups, _ = param_groups(module.plan, module.backbone, module.head, lr=1e-3, weight_decay=0.05)
    assert {g["weight_decay"] for g in groups} == {0.0}
    # A rebuilt run (resume, eval) takes its starting point from the checkpoint, not its own init.
    again = make_run(cfg, weights="none", init=False)
    again.module.load_state_dict(state)
    torch.testing.assert_close(again.strategy.extra_loss(again.module), penalty.detach())


# --- lora --------------------------------------------------------------------------------------
def _lora_plan(model, head, **knobs):
    strategy = build_strategy({"name": "lora", **knobs})
    backbone = backbone_of(model)
    strategy.prepare(backbone)
    return FinetunePlan(strategy, backbone.block_groups(), head), strategy


@pytest.mark.parametrize("family,double", [("vit", False), ("convnext", False), ("efficientnet", True), ("resnet", False)])
def test_lora_trains_adapters_and_head_only_and_merges_to_the_same_outputs(family, double):
    models = {
        "vit": lambda: timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32),
        "convnext": lambda: timm.create_model("convnext_atto", num_classes=0),
        # float32 rounding of merged depthwise-separable blocks exceeds 1e-5 on Lite0's large logits.
        "efficientnet": lambda: timm.create_model("tf_efficientnet_lite0", num_classes=0),
        # timm zero-initialises each block's last norm, which would leave a random ResNet's adapters without gradients.
        "resnet": lambda: timm.create_model("resnet10t", num_classes=0, zero_init_last=False),
    }
    torch.manual_seed(0)
    model = models[family]()
    head = nn.Linear(model.num_features, 3)
    plan, _ = _lora_plan(model, head, r=4, alpha=8.0)
    model.train()
    plan.apply(model, training=True, epoch=0)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) < 0.2 * sum(p.numel() for p in model.parameters())
    # A few steps, so lora_B is no longer zero and the adapters change the outputs.
    groups, _ = param_groups(plan, model, head, lr=1e-2, weight_decay=0.0)
    opt = torch.optim.AdamW(groups)
    x = torch.randn(4, 3, 32, 32)
    for _ in range(3):
        loss = head(model(x)).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)
    model.eval()
    if double:
        model, head, x = model.double(), head.double(), x.double()
    with torch.no_grad():
        adapted = head(model(x))
        merged = merge_adapters(model)
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        torch.testing.assert_close(head(merged(x)), adapted, rtol=1e-5, atol=1e-5)


def test_lora_composes_with_the_block_plan_and_its_norm_choice(tiny_models):
    model, head = timm.create_model("resnet10t", num_classes=0), nn.Linear(512, 3)
    plan, _ = _lora_plan(model, head, unfreeze_top=2)
    model.train()
    plan.apply(model, training=True, epoch=0)
    trained = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {"layer3", "layer4"}  # adapters of the top 2 groups only
    assert not model.layer4[0].bn1.training  # the base network's norms stay frozen
    model2, head2 = timm.create_model("resnet10t", num_classes=0), nn.Linear(512, 3)
    plan2, _ = _lora_plan(model2, head2, train_norm=True)
    model2.train()
    plan2.apply(model2, training=True, epoch=0)
    assert model2.layer4[0].bn1.training and model2.layer4[0].bn1.weight.requires_grad


def test_lora_refuses_target_modules_it_cannot_find(tmp_path):
    from transferlab.errors import ConfigError

    cfg = composed(tmp_path, "strategy=lora", "strategy.target_modules=[no_such_layer]")
    with pytest.raises(ConfigError, match="strategy=lora could not adapt resnet10t with target_modules=\\['no_such_layer'\\]"):
        make_run(cfg)
