"""gradual: groups unfreeze at their epochs under a real Trainer, and a resumed run is in the same state."""

import lightning.pytorch as pl
import pytest
from hydra import compose, initialize_config_dir

from transferlab import CONFIG_DIR
from transferlab.engine.assemble import make_run
from transferlab.engine.trainer import make_trainer
from transferlab.utils.resolvers import register

register()


def config(tmp_path, *extra):
    overrides = [
        "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
        "trainer.accelerator=cpu", "trainer.max_epochs=4", "strategy=gradual", "strategy.milestones=[1,2]",
        "strategy.unfreeze_top=2", "logger=csv", f"paths.output_dir={tmp_path}",
        "data.source_args.train_per_class=12", "data.source_args.test_per_class=4", "data.val_per_class=4", "data.batch_size=8",
        *extra,
    ]
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


class Probe(pl.Callback):
    """What the optimizer and the model look like at every training step."""

    def __init__(self):
        self.steps = {}

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        opt = trainer.optimizers[0]
        self.steps[trainer.global_step] = (
            trainer.current_epoch,
            tuple(round(g["lr"], 12) for g in opt.param_groups),
            tuple(module.plan.groups[i].params[0].requires_grad for i in range(module.plan.num_groups)),
            module.backbone.layer1[0].bn1.training,
            module.backbone.layer4[0].bn1.training,
        )


class Killed(Exception):
    pass


class KillAt(pl.Callback):
    """Dies as a killed job would: at the start of an epoch, after the last one was checkpointed."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            raise Killed()


def fit(cfg, callbacks, ckpt_path=None):
    pl.seed_everything(0)
    run = make_run(cfg)
    trainer = make_trainer(cfg, callbacks)
    trainer.fit(run.module, datamodule=run.datamodule, ckpt_path=ckpt_path)
    return run, trainer


@pytest.mark.slow
def test_gradual_unfreezes_at_milestones_and_resume_restores_the_same_state(tmp_path):
    probe = Probe()
    fit(config(tmp_path / "full"), [probe])
    epochs = {}
    for step, (epoch, lrs, grads, bn_low, bn_top) in sorted(probe.steps.items()):
        epochs.setdefault(epoch, (grads, bn_low, bn_top))
    # 5 groups; top 2 split over milestones [1, 2]: g04 from epoch 1, g03 from epoch 2.
    assert epochs[0] == ((False, False, False, False, False), False, False)
    assert epochs[1] == ((False, False, False, False, True), False, True)
    assert epochs[2] == ((False, False, False, True, True), False, True)
    assert epochs[3] == epochs[2]

    stopped = Probe()
    with pytest.raises(Killed):
        fit(config(tmp_path / "resumed"), [stopped, KillAt(2)])
    resumed = Probe()
    fit(config(tmp_path / "resumed"), [resumed], ckpt_path=str(tmp_path / "resumed" / "checkpoints" / "last.ckpt"))
    assert min(resumed.steps) == max(stopped.steps) + 1  # continued where it stopped
    for step, state in resumed.steps.items():
        assert state == probe.steps[step], step  # same lrs, same trainable groups, same BN modes
