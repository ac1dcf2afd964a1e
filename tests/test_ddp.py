"""DDP on the CPU: 2 gloo processes (trainer=ddp_cpu) train like 1 process, keep their ranks
identical across gradual's unfreezes, write one metrics.json, and take their devices from the
sweep's device pool."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
import timm
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.utilities.exceptions import SIGTERMException

from test_cli import run_cli
from transferlab import CONFIG_DIR
from transferlab.data.loaders import rank_batch_size
from transferlab.errors import ConfigError
from transferlab.engine.assemble import make_run
from transferlab.engine.trainer import make_trainer
from transferlab.sweep.pool_audit import read_records
from transferlab.utils.devices import ENV_DEVICES
from transferlab.utils.resolvers import register

register()

TINY = [
    "model=timm", "model.weights=none", "data=synthetic", "data.image_size=32",
    "data.source_args.train_per_class=20", "data.source_args.test_per_class=8", "data.val_per_class=4",
    "data.batch_size=16", "+trainer.enable_progress_bar=false",
]


@pytest.fixture(autouse=True)
def no_pool(monkeypatch):
    # A pool's hold leaking in from elsewhere would change trainer=ddp_cpu's device count.
    monkeypatch.delenv(ENV_DEVICES, raising=False)


def config(tmp_path, *extra):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY, f"paths.output_dir={tmp_path}", *extra])


def _digest(tensors) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        h.update(t.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Recorder(pl.Callback):
    """What each rank sees and does; written to <out>/rank<r>.json and .pt (ranks are other processes)."""

    def __init__(self, out: str):
        self.out = out
        self.rec = {"batches": {}, "groups": {}, "requires_grad": {}, "norm_training": {}}

    def _groups(self, module) -> list[str]:
        return [_digest(g.params) for g in module.plan.groups] + [_digest(module.head.parameters())]

    def on_fit_start(self, trainer, module):
        self.rec["rank"], self.rec["world"] = trainer.global_rank, trainer.world_size
        self.rec["initial"] = self._groups(module)

    def on_train_epoch_start(self, trainer, module):
        sampler = trainer.train_dataloader.batch_sampler  # EpochBatches is the batch sampler (data/loaders.py)
        self.rec["sampler"] = [type(sampler).__name__, getattr(sampler, "rank", None), getattr(sampler, "world_size", None)]
        self.rec["batches"][trainer.current_epoch] = list(sampler)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            e = trainer.current_epoch
            self.rec["requires_grad"][e] = [g.params[0].requires_grad for g in module.plan.groups]
            self.rec["norm_training"][e] = [any(m.training for m in g.norm_modules) for g in module.plan.groups]

    def on_train_epoch_end(self, trainer, module):
        self.rec["groups"][trainer.current_epoch] = self._groups(module)

    def on_train_end(self, trainer, module):
        r = trainer.global_rank
        Path(self.out).mkdir(parents=True, exist_ok=True)
        (Path(self.out) / f"rank{r}.json").write_text(json.dumps(self.rec))
        torch.save({k: v.detach().clone() for k, v in module.state_dict().items()}, Path(self.out) / f"rank{r}.pt")


def _fit(cfg, out: Path):
    pl.seed_everything(0)
    run = make_run(cfg)
    trainer = make_trainer(cfg, [Recorder(str(out))], logger=False)
    trainer.fit(run.module, datamodule=run.datamodule)
    run.trainer = trainer
    return run


def _load(out: Path, rank: int):
    rec = json.loads((out / f"rank{rank}.json").read_text())
    rec = {k: ({int(e): x for e, x in v.items()} if isinstance(v, dict) else v) for k, v in rec.items()}
    return rec, torch.load(out / f"rank{rank}.pt")


@pytest.mark.slow
def test_gradual_under_ddp_matches_one_process_and_ranks_stay_identical(tmp_path):
    """ConvNeXt (LayerNorm, no BatchNorm), no augmentation, no dropout: nothing random and nothing
    that depends on how a batch is split, so 2 ranks of 8 must train as 1 process of 16 does."""
    run_args = [
        "model.name=convnext_atto", "model.head.dropout=0", "data.augment.enabled=false",
        "trainer.max_epochs=3", "strategy=gradual", "strategy.milestones=[1,2]", "strategy.unfreeze_top=2",
        "callbacks.model_checkpoint=null", "callbacks.last_checkpoint=null", "callbacks.lr_monitor=null",
    ]
    _fit(config(tmp_path / "one", "trainer=cpu", *run_args), tmp_path / "one")
    run = _fit(config(tmp_path / "ddp", "trainer=ddp_cpu", *run_args), tmp_path / "ddp")
    one, one_sd = _load(tmp_path / "one", 0)
    (r0, sd0), (r1, sd1) = _load(tmp_path / "ddp", 0), _load(tmp_path / "ddp", 1)

    # Sharding: each rank draws its own half of every 1-process batch, from our sampler.
    assert (r0["rank"], r1["rank"], r0["world"]) == (0, 1, 2)
    assert r0["sampler"] == ["EpochBatches", 0, 2] and r1["sampler"] == ["EpochBatches", 1, 2]
    for epoch, batches in one["batches"].items():
        assert len(r0["batches"][epoch]) == len(r1["batches"][epoch]) == len(batches) == 4  # 64 images / 16
        for full, a, b in zip(batches, r0["batches"][epoch], r1["batches"][epoch]):
            assert len(a) == len(b) == 8 and not set(a) & set(b) and set(a) | set(b) == set(full)

    # The ranks stay bit-identical through both unfreezes (without the gating in FinetunePlan.apply,
    # the unfrozen groups' gradients were not all-reduced and the ranks drifted apart).
    assert r0["groups"] == r1["groups"]
    assert sd0.keys() == sd1.keys() == one_sd.keys()
    assert all(torch.equal(sd0[k], sd1[k]) for k in sd0)

    # convnext_atto has 6 groups; top 2 over milestones [1, 2]: g05 from epoch 1, g04 from epoch 2.
    starts = {5: 1, 4: 2}
    for rec in (one, r0, r1):
        for epoch in range(3):
            for g in range(6):
                same = rec["groups"][epoch][g] == rec["initial"][g]
                trains = g in starts and epoch >= starts[g]
                assert same != trains, (rec.get("rank"), epoch, g)  # bit-identical until its milestone
                assert rec["norm_training"][epoch][g] == trains  # frozen groups' norms in eval mode
            assert rec["groups"][epoch][6] != rec["initial"][6]  # the head trains from the start
    # Groups that never train keep requires_grad=False under DDP; gated ones require grad throughout.
    assert [r0["requires_grad"][e] for e in range(3)] == [[False] * 4 + [True] * 2] * 3
    assert [one["requires_grad"][e] for e in range(3)] == [[False] * 6, [False] * 5 + [True], [False] * 4 + [True] * 2]

    # Equal to the 1-process run up to float summation order: 3e-5 measured; dropping the gated
    # gradients is what makes it so (stepping them at lr 0 leaves AdamW moments behind: 1.5).
    worst = max(((sd0[k] - one_sd[k]).abs().max() / (one_sd[k].abs().max() + 1e-12)).item() for k in sd0 if sd0[k].is_floating_point())
    assert worst < 1e-3, worst
    # The main process got rank 0's weights and trainable count back.
    assert all(torch.equal(v, sd0[k]) for k, v in run.module.state_dict().items())
    head = sum(p.numel() for p in run.module.head.parameters())
    from transferlab.engine.trainer import finetune_callback

    assert finetune_callback(run.trainer).max_trainable_params == head + sum(run.module.plan.groups[g].numel() for g in starts)


def _single(paths):
    (p,) = paths
    return p


@pytest.mark.slow
def test_ddp_cpu_cli_trains_tests_and_writes_metrics_once(tmp_path):
    proc = run_cli("train.py", [
        *TINY, "model.name=resnet10t", "trainer=ddp_cpu", "trainer.max_epochs=3",
        "strategy=gradual", "strategy.milestones=[1,2]", "strategy.unfreeze_top=2",
    ], tmp_path)
    assert proc.stdout.count("test accuracy") == 1  # train() ran in this process only, not in the ranks
    run_dir = _single(list((tmp_path / "logs" / "train" / "runs").iterdir()))
    assert "DDP: 2 processes on CPU; data.batch_size=16 is the global batch, 8 per process" in (run_dir / "train.log").read_text()
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed"
    assert 0.4 <= m["test"]["acc"] <= 1.0  # 4 classes: chance is 0.25
    # The confusion matrix is every rank's counts gathered, like the accuracy (one rank holds half).
    counts = m["confusion"]["matrix"]
    assert sum(map(sum, counts)) == m["data_sizes"]["test"]
    assert abs(sum(counts[i][i] for i in range(len(counts))) / m["data_sizes"]["test"] - m["test"]["acc"]) <= 1e-6
    assert (run_dir / "confusion_matrix.png").is_file()
    # What train() reads after fit comes back from rank 0: timings, the trainable count (head,
    # layer3, layer4), and the validation accuracy of the epoch that is tested.
    assert m["time"]["fit_s"] > 0 and m["time"]["train_images_per_s"] > 0
    backbone = timm.create_model("resnet10t", num_classes=0)
    assert m["params"]["trainable"] == 512 * 4 + 4 + sum(p.numel() for n, p in backbone.named_parameters() if n.startswith(("layer3", "layer4")))
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    val = {int(r["epoch"]): float(r["val/acc"]) for r in rows if r.get("val/acc")}
    assert sorted(val) == [0, 1, 2]
    assert m["val"]["acc"] == pytest.approx(max(val.values()))
    assert Path(m["best_checkpoint"]).name == f"epoch_{max(val, key=val.get):03d}.ckpt"
    # One metrics.csv for fit and test: the test ranks append to the fit's rows.
    assert any(r.get("test/acc") for r in rows) and any(r.get("train/loss_epoch") for r in rows)
    # BatchNorm in groups that never train stayed in eval mode on every rank: statistics at init.
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for name, t in state.items():
        if name.endswith("running_mean"):
            frozen = not name.startswith(("backbone.layer3", "backbone.layer4"))
            assert (t.abs().max() == 0) == frozen, name


def test_job_devices_follow_the_pool(tmp_path, monkeypatch):
    assert config(tmp_path, "trainer=ddp_cpu").trainer.devices == 2
    monkeypatch.setenv(ENV_DEVICES, "cpu0,cpu1,cpu2")
    assert config(tmp_path, "trainer=ddp_cpu").trainer.devices == 3
    assert config(tmp_path, "trainer=ddp").trainer.devices == 3
    monkeypatch.setenv(ENV_DEVICES, "")  # a pool that gave nothing: the config's own count
    assert config(tmp_path, "trainer=ddp_cpu").trainer.devices == 2
    monkeypatch.setenv(ENV_DEVICES, "cpu0,cpu1")
    with pytest.raises(ConfigError, match="holds 2 devices for this job .* but the trainer uses 1: use trainer=ddp_cpu"):
        make_trainer(config(tmp_path, "trainer=cpu"), logger=False)
    with pytest.raises(ConfigError, match="data.batch_size=15 is the global batch and must split evenly over the 2"):
        make_trainer(config(tmp_path, "trainer=ddp_cpu", "data.batch_size=15"), logger=False)
    assert [rank_batch_size(64, 2, train=True), rank_batch_size(250, 2, train=False), rank_batch_size(7, 1, train=True)] == [32, 125, 7]


@pytest.mark.slow
def test_a_job_holding_two_devices_trains_on_two_processes(tmp_path, monkeypatch):
    # CPU slots even where GPUs are visible. Two jobs, one worker (2 slots / 2 per job): the
    # ddp_cpu job trains on both slots; the 1-device trainer is refused before it trains.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    proc = run_cli("train.py", [
        "-m", "launcher=parallel", "hydra.callbacks.device_pool.cpu_slots=2", "hydra.callbacks.device_pool.devices_per_job=2",
        *TINY, "model.name=resnet10t", "trainer.max_epochs=1", "strategy=partial", "test=false", "trainer=ddp_cpu,cpu",
    ], tmp_path, check=False)
    assert proc.returncode == 1 and "1 of 2 jobs failed" in proc.stderr  # the refused job, in the sweep's summary
    assert "n_jobs=1," in proc.stdout + proc.stderr
    sweep = _single(list((tmp_path / "logs" / "train" / "multiruns").iterdir()))
    recs = {Path(r["job_dir"]).name: r for r in read_records(sweep / ".device_pool")}
    assert sorted(recs) == ["0", "1"]
    assert all(r["ids"] == ["cpu0", "cpu1"] and r["status"] == "released" for r in recs.values())
    ddp, cpu = (json.loads((sweep / j / "metrics.json").read_text()) for j in "01")
    assert ddp["status"] == "completed" and ddp["val"]["acc"] > 0
    assert "DDP: 2 processes on CPU" in (sweep / "0" / "train.log").read_text()
    assert cpu["status"] == "failed" and "holds 2 devices for this job (cpu0,cpu1) but the trainer uses 1" in cpu["error"]


class SigtermParentAt(pl.Callback):
    """Rank 0 sends SIGTERM to the process that spawned the ranks, as a job scheduler would to the
    job. Each rank notes the last step it started (the ranks' exceptions stay in the ranks)."""

    def __init__(self, out: str, epoch: int, batch: int):
        self.out, self.epoch, self.batch = out, epoch, batch

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        Path(self.out, f"last_step{trainer.global_rank}").write_text(str(trainer.global_step))
        if trainer.global_rank == 0 and (trainer.current_epoch, batch_idx) == (self.epoch, self.batch):
            os.kill(os.getppid(), signal.SIGTERM)


@pytest.mark.slow
def test_sigterm_stops_every_rank_at_the_same_step(tmp_path):
    cfg = config(tmp_path, "trainer=ddp_cpu", "model.name=resnet10t", "trainer.max_epochs=5", "strategy=full", "logger=csv")
    pl.seed_everything(0)
    run = make_run(cfg)
    trainer = make_trainer(cfg, [SigtermParentAt(str(tmp_path), epoch=1, batch=1)])
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SIGTERMException):  # what train.py records as "interrupted", as with 1 process
        trainer.fit(run.module, datamodule=run.datamodule)
    assert signal.getsignal(signal.SIGTERM) is before
    assert trainer.strategy.launcher.procs and not any(p.is_alive() for p in trainer.strategy.launcher.procs)
    last = [int((tmp_path / f"last_step{r}").read_text()) for r in (0, 1)]
    # 4 steps per epoch: the signal came in step 5 and both ranks stopped at the same step, the
    # next one at the latest, not after the 20 steps of the run.
    assert last[0] == last[1] and last[0] in (5, 6), last
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()  # epoch 0's, to resume from
