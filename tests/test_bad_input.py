"""Bad input gets one clear line that names the problem and the fix, never a traceback alone.

Each case goes through the command path (`transferlab.train.main()` / `transferlab.eval.main()` with
a patched sys.argv: Hydra's parsing, composition, run directory and our error handling, as
`python train.py ...` runs them) in this process, which saves ~10 s of imports per case; one real
subprocess checks what the terminal shows.
"""

import errno
import json
import os
import pathlib
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from transferlab import CONFIG_DIR
from transferlab import eval as eval_cli
from transferlab import train as train_cli

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false",
]
FAST = [*TINY, "+trainer.fast_dev_run=true"]
# One tiny epoch that still writes checkpoints (fast_dev_run writes none).
EPOCH = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "+trainer.limit_val_batches=1", "+trainer.limit_test_batches=1"]


def run(main, args, root, monkeypatch, capsys=None, script="train.py"):
    """(exit code, stdout, stderr) of `python <script> <args>`, in this process."""
    GlobalHydra.instance().clear()
    monkeypatch.setattr(sys, "argv", [script, *args])
    monkeypatch.setenv("TRANSFERLAB_ROOT", str(root))
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    if capsys is not None:
        capsys.readouterr()
    try:
        main()
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        GlobalHydra.instance().clear()
    out, err = capsys.readouterr() if capsys is not None else ("", "")
    return code, out, err


def error_line(code, err):
    """The one `error:` line a user error prints, last on stderr (after Lightning's INFO lines, if
    the trainer had started), with no traceback."""
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err
    return errors[0]


def run_dirs(root, task="train"):
    return sorted(p for p in (Path(root) / "logs" / task / "runs").iterdir() if p.is_dir())


def save(path: Path, mode: str, seed: int):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (20, 24), dtype=np.uint16))
    elif mode == "P":
        img = Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8), "RGB").quantize(8)
    else:
        channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
        a = rng.integers(0, 256, (20, 24, channels), dtype=np.uint8)
        img = Image.fromarray(a[..., 0] if channels == 1 else a, mode)
    img.save(path)


def image_tree(root: Path, classes=("a", "b")) -> Path:
    """Grey, RGBA, palette and 16-bit images, a truncated JPEG and files that are not images."""
    for c, name in enumerate(classes):
        for i, mode in enumerate(["RGB", "L", "RGBA", "P", "I;16", "RGB"]):
            save(root / name / f"{i}.png", mode, seed=10 * c + i)
        (root / name / "notes.txt").write_text("not an image")
    broken = root / classes[0] / "broken.jpg"
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(broken, "JPEG")
    broken.write_bytes(broken.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny run on an image folder with bad files in it; its log, metrics and checkpoint."""
    tmp = tmp_path_factory.mktemp("trained")
    data = image_tree(tmp / "images")
    mp = pytest.MonkeyPatch()
    try:
        code, out, err = run(
            train_cli.main,
            [*TINY, "data=imagefolder", f"data.source_args.root={data}", "data.batch_size=4", *EPOCH],
            tmp, mp,
        )
    finally:
        mp.undo()
    assert code == 0, err
    (run_dir,) = run_dirs(tmp)
    return {"data": data, "run_dir": run_dir, "ckpt": run_dir / "checkpoints" / "last.ckpt",
            "metrics": json.loads((run_dir / "metrics.json").read_text()), "log": (run_dir / "train.log").read_text()}


# --- the table: arguments -> what the one line must say ---------------------------------------


def choices(group: str) -> str:
    """The options of a config group as the error lists them: the files in its folder."""
    return ", ".join(sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml")))


CASES = {
    "unknown model": ([*FAST, "model.name=resnet10x"], ["unknown model 'resnet10x'", "resnet10t", "model.name=<one of them>"]),
    "unknown strategy": ([*FAST, "strategy=partail"], [f"strategy=partail: no such strategy config; choose one of {choices('strategy')}", "(did you mean strategy=partial?)"]),
    "unknown data": ([*FAST, "data=fasion_mnist"], [f"data=fasion_mnist: no such data config; choose one of {choices('data')}", "did you mean data=fashion_mnist?"]),
    "unknown key": ([*FAST, "model.nme=3"], ["Could not override 'model.nme'", "+model.nme=3"]),
    "malformed override": ([*FAST, "strategy.milestones=[1,2"], ["[1,2", "override_grammar"]),
    "model name unset": ([a for a in FAST if not a.startswith("model.name=")], ["model.name is not set", "pass model.name=<value>"]),
    "unfreeze_top too large": ([*FAST, "strategy=partial", "strategy.unfreeze_top=99"], ["strategy.unfreeze_top=99", "5 block groups", "use 0..5"]),
    # One GPU more than the machine has: refused by Lightning on every machine, in its own words.
    "more gpus than the machine has": ([*FAST, "trainer.accelerator=gpu", f"trainer.devices={torch.cuda.device_count() + 1}"],
                                       ["trainer: ", "only has" if torch.cuda.is_available() else "No supported gpu backend found!",
                                        "trainer=cpu|gpu|ddp|ddp_cpu"]),
    "hub weights offline": ([*FAST, "model.weights=hub"], ["could not get hub weights for 'resnet10t'", "model.weights=none", "model.weights=file:<path>", "model=efficientnet_lite0"]),
    "samples_per_class too large": ([*FAST, "data.samples_per_class=1000"], ["class 'class_0' has 56 images left after validation", "data.samples_per_class=1000", "lower data.samples_per_class"]),
    "data root unset": ([*FAST, "data=imagefolder"], ["data.source_args.root is unset", "pass data.source_args.root=<a folder of <class>/<image> sub-folders>"]),
    "eval split": (["ckpt_path=x.ckpt", "split=train"], ["split='train' is not a split eval.py runs", "split=test or split=val"]),
    "eval without ckpt_path": ([], ["pass ckpt_path=<run dir>/checkpoints/<file>.ckpt, or model_path=<exported model.onnx>"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_naming_problem_and_fix(case, tmp_path, monkeypatch, capsys):
    args, expected = CASES[case]
    if case.startswith("eval"):
        code, _, err = run(eval_cli.main, args, tmp_path, monkeypatch, capsys, "eval.py")
    else:
        code, _, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    line = error_line(code, err)
    for text in expected:
        assert text in line, (text, line)


def test_data_root_missing_empty_or_with_an_empty_class(tmp_path, monkeypatch, capsys):
    base = [*FAST, "data=imagefolder"]
    code, _, err = run(train_cli.main, [*base, f"data.source_args.root={tmp_path / 'nope'}"], tmp_path, monkeypatch, capsys)
    assert f"data.source_args.root '{tmp_path / 'nope'}' does not exist: pass data.source_args.root=" in error_line(code, err)

    (tmp_path / "empty").mkdir()
    code, _, err = run(train_cli.main, [*base, f"data.source_args.root={tmp_path / 'empty'}"], tmp_path, monkeypatch, capsys)
    assert "has no class folders: put images in" in error_line(code, err)

    tree = image_tree(tmp_path / "tree")
    (tree / "c").mkdir()
    (tree / "c" / "readme.md").write_text("no images yet")
    code, _, err = run(train_cli.main, [*base, f"data.source_args.root={tree}"], tmp_path, monkeypatch, capsys)
    line = error_line(code, err)
    assert f"class folder '{tree / 'c'}' has no images" in line and "add images or remove the folder" in line


def test_bad_files_are_skipped_counted_converted_and_ignored(trained):
    # Grey, RGBA, palette and 16-bit PNGs all train as RGB; the truncated JPEG is skipped and counted;
    # notes.txt is ignored, and counted too.
    m, log_text = trained["metrics"], trained["log"]
    assert m["status"] == "completed"
    assert sum(m["data_sizes"].values()) == 12  # 6 good images per class, the broken one skipped
    assert "skipped 1 of 13 unreadable images" in log_text and "broken.jpg" in log_text
    assert "ignored 2 files that are not images" in log_text and "notes.txt" in log_text


def test_corrupt_image_with_strict_is_an_error(trained, tmp_path, monkeypatch, capsys):
    args = [*FAST, "data=imagefolder", f"data.source_args.root={trained['data']}", "data.source_args.strict=true"]
    line = error_line(*run(train_cli.main, args, tmp_path, monkeypatch, capsys)[::2])
    assert "1 of 13 images in" in line and "broken.jpg" in line and "data.source_args.strict=false to skip them" in line


# --- checkpoints: init_from, resume and eval on data they do not fit ------------------------------


def test_init_from_a_checkpoint_with_another_class_count(trained, tmp_path, monkeypatch, capsys):
    ckpt = trained["ckpt"]
    code, _, err = run(train_cli.main, [*FAST, f"model.init_from={ckpt}"], tmp_path, monkeypatch, capsys)
    assert error_line(code, err) == (
        f"error: checkpoint {ckpt} has a 2-class head, this data has 4 classes: "
        "pass model.head.reset=true to start a new head (or use data that matches)"
    )
    # Two classes, but not the same two: loading the head would silently relabel them.
    args = [*FAST, f"model.init_from={ckpt}", "data.source_args.num_classes=2"]
    line = error_line(*run(train_cli.main, args, tmp_path, monkeypatch, capsys)[::2])
    assert "has a head for other classes (a, b), this data's are class_0, class_1: pass model.head.reset=true" in line

    code, _, err = run(train_cli.main, [*FAST, f"model.init_from={ckpt}", "model.head.reset=true"], tmp_path, monkeypatch, capsys)
    assert code == 0, err
    m = json.loads((run_dirs(tmp_path)[-1] / "metrics.json").read_text())
    # fast_dev_run checks that a setup runs: recorded as a debug run, never as a result.
    assert m["status"] == "debug" and m["weights_loaded"] == f"init_from:{ckpt} (backbone; new head)"


def test_init_from_loads_backbone_and_fitting_head(trained, tmp_path):
    from transferlab.engine.assemble import make_run

    state = torch.load(trained["ckpt"], map_location="cpu", weights_only=False)["state_dict"]

    def compose_run(*extra):
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*TINY, f"paths.output_dir={tmp_path}", f"model.init_from={trained['ckpt']}", *extra])
        return make_run(cfg)

    same = compose_run("data=imagefolder", f"data.source_args.root={trained['data']}", "model.head.dropout=0")
    for k, v in same.module.backbone.state_dict().items():
        assert torch.equal(v, state[f"backbone.{k}"]), k
    # The checkpoint's head had Dropout before its Linear (head.1.*); this one has none (head.0.*).
    assert torch.equal(same.module.head[0].weight, state["head.1.weight"])
    assert same.backbone.weights == f"init_from:{trained['ckpt']} (backbone and head)"

    fresh = compose_run("data.source_args.num_classes=5", "model.head.reset=true")
    assert torch.equal(fresh.module.backbone.conv1[0].weight, state["backbone.conv1.0.weight"])
    assert fresh.module.head[-1].weight.shape[0] == 5


def test_init_from_a_bad_file_or_another_model(trained, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "gone.ckpt"
    line = error_line(*run(train_cli.main, [*FAST, f"model.init_from={missing}"], tmp_path, monkeypatch, capsys)[::2])
    assert f"no checkpoint at {missing}: pass <run dir>/checkpoints/<file>.ckpt" in line

    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(b"PK\x03\x04 half a download")
    line = error_line(*run(train_cli.main, [*FAST, f"model.init_from={junk}"], tmp_path, monkeypatch, capsys)[::2])
    assert f"cannot read checkpoint {junk}" in line and "is it complete" in line

    args = [*FAST, "model.name=resnet14t", f"model.init_from={trained['ckpt']}"]
    line = error_line(*run(train_cli.main, args, tmp_path, monkeypatch, capsys)[::2])
    assert "holds a resnet10t backbone, this run builds resnet14t: set model=timm model.name=resnet10t" in line


def test_resume_and_eval_on_data_that_changed_name_the_mismatch(trained, tmp_path, monkeypatch, capsys):
    ckpt, data = trained["ckpt"], trained["data"]
    extra = data / "c"
    for i in range(6):
        save(extra / f"{i}.png", "RGB", seed=100 + i)
    try:
        code, _, err = run(train_cli.main, [f"ckpt_path={ckpt}", "trainer.max_epochs=2"], tmp_path, monkeypatch, capsys)
        line = error_line(code, err)
        assert f"checkpoint {ckpt} has a 2-class head, this data has 3 classes" in line
        assert f"start a new run from it: model.init_from={ckpt} model.head.reset=true" in line

        code, _, err = run(eval_cli.main, [f"ckpt_path={ckpt}"], tmp_path, monkeypatch, capsys, "eval.py")
        line = error_line(code, err)
        assert f"checkpoint {ckpt} has a 2-class head, this data has 3 classes: evaluate it on the data it was trained on" in line
    finally:
        for p in extra.iterdir():
            p.unlink()
        extra.rmdir()
    code, _, err = run(eval_cli.main, [f"ckpt_path={tmp_path / 'nope.ckpt'}"], tmp_path, monkeypatch, capsys, "eval.py")
    assert f"no checkpoint at {tmp_path / 'nope.ckpt'}" in error_line(code, err)


# --- training that diverges; outputs that cannot be written --------------------------------------


def test_nan_loss_stops_with_the_step_and_lr(tmp_path, monkeypatch, capsys):
    args = [*TINY, "strategy.lr=1e30", "optim.warmup_epochs=0", "trainer.max_epochs=1", "+trainer.limit_train_batches=3", "+trainer.num_sanity_val_steps=0", "test=false"]
    line = error_line(*run(train_cli.main, args, tmp_path, monkeypatch, capsys)[::2])
    assert re.search(r"loss became nan at step 1 \(epoch 0\) with lr \d\.\d+e\+29 \(head; 8 groups", line), line
    assert "lower strategy.lr (now 1e+30)" in line
    m = json.loads((run_dirs(tmp_path)[-1] / "metrics.json").read_text())
    assert m["status"] == "failed" and m["error"].startswith("DivergedError: loss became nan at step 1")


@pytest.mark.parametrize("code_", [errno.EACCES, errno.EROFS])
def test_unwritable_log_dir(tmp_path, monkeypatch, capsys, code_):
    # Root ignores permission bits, so the file system's refusal is simulated where Hydra creates the run dir.
    locked = tmp_path / "locked"
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        if str(self).startswith(str(locked)):
            raise OSError(code_, os.strerror(code_), str(locked))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)
    line = error_line(*run(train_cli.main, [*FAST, f"paths.log_dir={locked}"], tmp_path, monkeypatch, capsys)[::2])
    assert line == f"error: cannot write {locked} ({os.strerror(code_)}): pass paths.log_dir=<a folder you can write> (or hydra.run.dir=...)"


def test_log_dir_under_a_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "afile").write_text("x")
    line = error_line(*run(train_cli.main, [*FAST, f"paths.log_dir={tmp_path / 'afile' / 'logs'}"], tmp_path, monkeypatch, capsys)[::2])
    assert line.startswith(f"error: cannot create {tmp_path / 'afile' / 'logs'}/train/runs/")
    assert line.endswith(f": {tmp_path / 'afile'} is a file, not a folder: pass paths.log_dir=<a folder>")


def test_disk_full_while_checkpointing(tmp_path, monkeypatch, capsys):
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    def full(self, checkpoint, path, storage_options=None):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", full)
    line = error_line(*run(train_cli.main, [*TINY, *EPOCH], tmp_path, monkeypatch, capsys)[::2])
    run_dir = run_dirs(tmp_path)[-1]
    assert line == (
        f"error: no space left to write {run_dir} (No space left on device): "
        "free space on that disk, or pass paths.log_dir=<a folder on a disk with space>"
    )


def test_finished_run_whose_metrics_json_cannot_be_written_prints_them(tmp_path, monkeypatch, capsys):
    from transferlab import record as run_record

    real = run_record.atomic_write_json

    def write(path, obj):
        if Path(path).name == "metrics.json":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, obj)

    monkeypatch.setattr(run_record, "atomic_write_json", write)
    code, out, err = run(train_cli.main, FAST, tmp_path, monkeypatch, capsys)
    line = error_line(code, err)
    assert "no space left to write" in line and "metrics.json" in line and "metrics are printed above as JSON" in line
    printed = [json.loads(s) for s in out.splitlines() if s.startswith("{")]
    assert len(printed) == 1 and printed[0]["status"] == "debug" and "acc" in printed[0]["test"]  # a fast_dev_run


# --- what the terminal shows -----------------------------------------------------------------------


@pytest.mark.slow
def test_terminal_shows_one_line_without_traceback(tmp_path):
    """What a real `python train.py strategy=partail` prints: Hydra's ten-line report is one line."""
    env = {**os.environ, "TRANSFERLAB_ROOT": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *FAST, "strategy=partail"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.stderr.strip() == (
        f"error: strategy=partail: no such strategy config; choose one of {choices('strategy')} (did you mean strategy=partial?)"
    )
    assert proc.returncode == 2 and not (tmp_path / "logs").exists()
