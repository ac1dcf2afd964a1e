"""Multi-node DDP (trainer=multinode): every rank is a `python train.py` that the cluster starts.

Two processes on this machine stand in for two nodes of one process each, started by hand for
Lightning's default environment (NODE_RANK, LOCAL_RANK, MASTER_ADDR / MASTER_PORT) over gloo; they
must train one model. The layouts that would hang or train several models are refused in one line,
and launcher=slurm takes its job shape from the trainer."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import LightningEnvironment

from transferlab import CONFIG_DIR
from transferlab.engine.trainer import make_trainer
from transferlab.errors import ConfigError
from transferlab.utils import ranks
from transferlab.utils.resolvers import hydra_subdir, log_suffix, register, slurm_gpus

register()

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = Path(__file__).resolve().parent / "plugins"
# What a launcher may have put in this process's environment: none of it may leak into a test.
LAUNCH_VARS = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
               "MASTER_PORT", "TORCHELASTIC_RUN_ID", "TRANSFERLAB_DEVICES")
TINY = [
    "model=timm", "model.weights=none", "data=synthetic", "data.image_size=32",
    "data.source_args.train_per_class=20", "data.source_args.test_per_class=8", "data.val_per_class=4",
    "data.batch_size=16", "+trainer.enable_progress_bar=false",
]
CPU_NODES = ["trainer=multinode", "trainer.accelerator=cpu", "trainer.precision=32-true", "trainer.devices=1"]


def _clean(env: dict) -> dict:
    return {k: v for k, v in env.items() if k not in LAUNCH_VARS and not k.startswith("SLURM_")}


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for k in list(os.environ):
        if k in LAUNCH_VARS or k.startswith("SLURM_"):
            monkeypatch.delenv(k)


def config(tmp_path, *extra):
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose("train", overrides=[*TINY, "model.name=resnet10t", f"paths.output_dir={tmp_path}", *extra])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_nodes_of_one_process_train_one_model(tmp_path):
    run_dir, out = tmp_path / "run", tmp_path / "ranks"
    base = {
        **_clean(os.environ), "TRANSFERLAB_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": os.pathsep.join([str(PLUGINS), str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2", "LOCAL_RANK": "0",
        "OMP_NUM_THREADS": "1",  # two "nodes" on one machine's cores
    }
    args = [
        *TINY, *CPU_NODES, "trainer.num_nodes=2", "model.name=convnext_atto",  # LayerNorm: no per-rank statistics
        "strategy=full", "trainer.max_epochs=1", "+trainer.limit_train_batches=2", "callbacks.lr_monitor=null",
        f"hydra.run.dir={run_dir}", "+callbacks.rank_state._target_=rank_state.RankState", f"+callbacks.rank_state.out={out}",
    ]
    procs = [
        subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env={**base, "NODE_RANK": str(node)},
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for node in (0, 1)
    ]
    try:
        logs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for node, (p, log) in enumerate(zip(procs, logs)):
        assert p.returncode == 0, f"node {node} exited {p.returncode}\n{log[-3000:]}"

    recs = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [(r["rank"], r["node_rank"], r["world"], r["nodes"]) for r in recs] == [(0, 0, 2, 2), (1, 1, 2, 2)]
    assert recs[0]["global_step"] == recs[1]["global_step"] == 2
    # One model: both ranks started from the same weights, stepped, and hold the same weights after.
    assert recs[0]["initial"] == recs[1]["initial"] != recs[0]["final"] == recs[1]["final"]
    sd0, sd1 = (torch.load(out / f"rank{r}.pt") for r in (0, 1))
    assert sd0.keys() == sd1.keys() and all(torch.equal(sd0[k], sd1[k]) for k in sd0)

    # The run's files once, from the first rank; the other rank only logs, into its own file.
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["status"] == "completed" and m["trained"]["optimizer_steps"] == 2
    assert m["data_sizes"]["test"] == 32 and sum(map(sum, m["confusion"]["matrix"])) == 32  # both ranks' halves
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "DDP: 2 processes on CPU, 2 nodes of 1; data.batch_size=16 is the global batch, 8 per process" in (run_dir / "train.log").read_text()
    assert sorted(p.name for p in run_dir.glob("*.log")) == ["train.log", "train.node1-local0.log"]
    assert logs[0].count("test accuracy") == 1 and "test accuracy" not in logs[1]
    assert len(list(tmp_path.rglob("metrics.json"))) == 1


# --- layouts refused before any rank waits for another ---------------------------------------------
def test_multinode_started_alone_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^trainer.num_nodes=2 x trainer.devices=1: trainer=multinode trains in processes that SLURM .* started alone"):
        make_trainer(config(tmp_path, *CPU_NODES), logger=False)


def test_spawning_trainers_stay_on_one_machine(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match=r"^trainer.num_nodes=2 with a trainer that spawns its ranks on this machine .* use trainer=multinode"):
        make_trainer(config(tmp_path, "trainer=ddp_cpu", "trainer.num_nodes=2"), logger=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ConfigError, match=r"^this process is one of 2 that a launcher started .* would spawn 2 ranks in each"):
        make_trainer(config(tmp_path, "trainer=ddp_cpu"), logger=False)
    with pytest.raises(ConfigError, match=r"^this process is one of 2 .* a one-process trainer would train 2 separate models"):
        make_trainer(config(tmp_path, "trainer=cpu"), logger=False)


def test_launched_count_must_match_the_trainer(tmp_path, monkeypatch):
    for k, v in {"WORLD_SIZE": "3", "NODE_RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=r"^the launcher started 3 processes .* trainer.num_nodes=2 x trainer.devices=1 is 2"):
        make_trainer(config(tmp_path, *CPU_NODES), logger=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    trainer = make_trainer(config(tmp_path, *CPU_NODES), logger=False)
    assert (trainer.world_size, trainer.num_nodes, trainer.global_rank) == (2, 2, 0)


def _slurm_task(monkeypatch, nodes: int, per_node: int, procid: int = 0):
    for k, v in {"SLURM_NTASKS": nodes * per_node, "SLURM_NNODES": nodes, "SLURM_NTASKS_PER_NODE": per_node,
                 "SLURM_PROCID": procid, "SLURM_LOCALID": procid % per_node, "SLURM_NODEID": procid // per_node,
                 "SLURM_JOB_NAME": "train", "SLURM_JOB_ID": "1234", "SLURM_NODELIST": "localhost"}.items():
        monkeypatch.setenv(k, str(v))


def test_slurm_allocation_must_match_the_trainer(tmp_path, monkeypatch):
    # What a sweep over trainer.devices under launcher=slurm would give: the job was shaped by the default.
    _slurm_task(monkeypatch, nodes=2, per_node=2)
    with pytest.raises(ConfigError, match=r"^SLURM gave this job 2 node\(s\) x 2 task\(s\) but the trainer wants trainer.num_nodes=2 x trainer.devices=1"):
        make_trainer(config(tmp_path, *CPU_NODES), logger=False)
    trainer = make_trainer(config(tmp_path, *CPU_NODES, "trainer.devices=2"), logger=False)
    assert (trainer.world_size, type(trainer.strategy.cluster_environment).__name__) == (4, "SLURMEnvironment")


def test_a_shell_inside_an_allocation_is_one_process(tmp_path, monkeypatch):
    # salloc -n 4 exports SLURM_NTASKS=4 to the shell, which srun did not start (no SLURM_PROCID).
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert ranks.launched_world_size() == 1
    assert make_trainer(config(tmp_path, "trainer=ddp_cpu"), logger=False).world_size == 2


def test_spawned_ranks_in_a_slurm_task_number_themselves(tmp_path, monkeypatch):
    # One SLURM task (launcher=slurm with trainer=ddp_cpu): SLURM's environment would give both spawned
    # ranks the task's rank 0 in a world of 1, and each would train alone.
    _slurm_task(monkeypatch, nodes=1, per_node=1)
    trainer = make_trainer(config(tmp_path, "trainer=ddp_cpu"), logger=False)
    assert type(trainer.strategy.cluster_environment) is LightningEnvironment and trainer.world_size == 2


# --- which process this is, before a Trainer exists ------------------------------------------------
@pytest.mark.parametrize("env,first,tag", [
    ({}, True, ""),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}, True, ""),
    ({"RANK": "3", "LOCAL_RANK": "1", "GROUP_RANK": "1"}, False, "rank3"),
    ({"SLURM_PROCID": "5"}, False, "rank5"),
    ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False, "node1-local0"),
    ({"NODE_RANK": "0", "LOCAL_RANK": "2"}, False, "node0-local2"),
])
def test_process_names(monkeypatch, env, first, tag):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ranks.first_process() is first and ranks.process_tag() == tag
    assert hydra_subdir(".hydra") == (".hydra" if first else None)
    assert log_suffix() == (f".{tag}" if tag else "")


def test_slurm_gpus_follow_the_trainer():
    assert [slurm_gpus("gpu", 4), slurm_gpus("auto", 1), slurm_gpus("cpu", 2), slurm_gpus("gpu", [0, 1])] == [4, 1, None, 2]
    with pytest.raises(ConfigError, match=r"^launcher=slurm needs trainer.devices as a count of GPUs per node \(got 'auto'\)"):
        slurm_gpus("gpu", "auto")


def test_slurm_launcher_takes_its_shape_from_the_trainer(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="hydra-submitit-launcher (pip install -e '.[sweep]')")
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        multi = compose("train", overrides=["launcher=slurm", "trainer=multinode", "trainer.num_nodes=3", "trainer.devices=4"],
                        return_hydra_config=True)
        single = compose("train", overrides=["launcher=slurm", "trainer=ddp"], return_hydra_config=True)
        cpu = compose("train", overrides=["launcher=slurm", "trainer=cpu"], return_hydra_config=True)
    def shape(c):  # as the launcher receives them: resolved once, in the launching process
        params = instantiate(c.hydra.launcher).params
        return params["nodes"], params["tasks_per_node"], params["gpus_per_node"]

    assert shape(multi) == (3, 4, 4)  # one task per GPU
    assert shape(single) == (1, 1, 2)  # one task that spawns a rank per GPU
    assert shape(cpu) == (1, 1, None)  # no --gpus-per-node at all


def test_lightning_ddp_started_alone_on_one_machine_is_left_to_lightning(tmp_path):
    # A single run: Lightning starts the other local rank by running the command line again (with
    # LOCAL_RANK set, so the run-dir guard and the run's files leave it alone). Only building here.
    trainer = make_trainer(config(tmp_path, *CPU_NODES, "trainer.num_nodes=1", "trainer.devices=2"), logger=False)
    assert trainer.world_size == 2 and type(trainer.strategy.launcher).__name__ == "_SubprocessScriptLauncher"


def test_lightning_ddp_started_alone_in_a_multirun_is_refused(tmp_path, monkeypatch):
    from transferlab.utils import ddp_layout

    monkeypatch.setattr(ddp_layout, "_in_multirun", lambda: True)  # its command line is the whole sweep
    with pytest.raises(ConfigError, match=r"^trainer.num_nodes=1 x trainer.devices=2: .* started alone"):
        make_trainer(config(tmp_path, *CPU_NODES, "trainer.num_nodes=1", "trainer.devices=2"), logger=False)
