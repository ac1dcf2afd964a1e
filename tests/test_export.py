"""A finished run as a model to use: predict.py on files, `transferlab export` in each format, eval.py
on the exported ONNX file, and every way these can be handed bad input."""

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from test_bad_input import error_line, run
from test_cli import run_cli

from transferlab.cli import main as tl
from transferlab.data.images.decode import PIL_PIXEL_LIMIT, decode_files
from transferlab.data.sources.synthetic import make_synthetic
from transferlab.errors import CheckpointError, ConfigError, DataError
from transferlab.export import export_run
from transferlab.export.verify import ExportError
from transferlab.inference.inputs import collect_inputs
from transferlab.inference.scoring import onnx_scorer, predict_files, torch_scorer
from transferlab.inference.sidecar import read_sidecar
from transferlab.inference.trained import load_trained, resolve_checkpoint

pytestmark = pytest.mark.slow

TRAIN = ["model=timm", "model.name=resnet10t", "model.weights=none", "trainer.max_epochs=2", "trainer.accelerator=cpu",
         "data.image_size=32", "data.eval_hflip=true"]


def write_tree(root: Path, per_class_train=24, per_class_test=8) -> Path:
    """Learnable images as PNG files, root/train|test/<class>/<n>.png."""
    splits = make_synthetic(num_classes=3, train_per_class=per_class_train, test_per_class=per_class_test, image_size=40)
    for split in ("train", "test"):
        arrays = getattr(splits, split)
        for i, (image, label) in enumerate(zip(arrays.images, arrays.labels)):
            folder = root / split / arrays.classes[int(label)]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:03d}.png")
    return root


def train_run(tmp: Path, tree: Path, *extra) -> Path:
    run_cli("train.py", [*TRAIN, "data=imagefolder", f"data.source_args.root={tree}", "data.source_args.val_fraction=0.2",
                         *extra], tmp)
    return next(tmp.rglob("metrics.json")).parent


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    tree = write_tree(tmp / "images")
    return train_run(tmp / "logs", tree, "strategy=full"), tree


@pytest.fixture(scope="module")
def onnx_export(trained_run, tmp_path_factory):
    run_dir, _ = trained_run
    out = tmp_path_factory.mktemp("exports") / "onnx"
    return export_run(str(run_dir), "onnx", out)


def engine_logits(trained, images_uint8: torch.Tensor) -> np.ndarray:
    """What the run's eval path (module + datamodule transform + mirror average) gives these images."""
    from transferlab.data.batch import Batch
    from transferlab.data.images.transforms import BatchPreprocess

    module = trained.module.eval()
    transform = BatchPreprocess(**trained.preprocess)
    batch = transform.apply(Batch(images=images_uint8), train=False)
    with torch.inference_mode():
        logits = module(batch)
        if module.tta_hflip:
            logits = (logits + module(batch.with_inputs(images=batch.images.flip(-1)))) / 2
    return logits.numpy()


def test_predict_gives_the_eval_paths_logits_and_eval_accuracy(trained_run):
    run_dir, tree = trained_run
    trained = load_trained(run_dir)
    record = json.loads((run_dir / "metrics.json").read_text())
    assert trained.checkpoint == Path(record["best_checkpoint"])  # a run dir means the checkpoint it tested
    files = collect_inputs(tree / "test")
    preds = predict_files(files, torch_scorer(trained.network()), trained.preprocess, trained.storage_size,
                          trained.classes, progress=False)
    # The test split as the run's data source stored it: the same decode, so the same uint8 images.
    from transferlab.engine.builders import make_datamodule

    dm = make_datamodule(trained.config, trained.module.encoder)
    dm.setup()
    stored = dm.splits["test"].images
    decoded = torch.from_numpy(decode_files([f.path for f in files], trained.storage_size, PIL_PIXEL_LIMIT).images)
    index = [next(j for j in range(len(stored)) if torch.equal(stored[j], d)) for d in decoded]
    np.testing.assert_allclose(preds.logits, engine_logits(trained, stored[index]), atol=1e-5, rtol=0)
    assert abs(preds.accuracy() - record["test"]["acc"]) < 1e-6


def test_predict_cli_marks_unreadable_inputs_and_keeps_the_rest(trained_run, tmp_path, monkeypatch, capsys):
    from transferlab import predict as predict_cli

    run_dir, tree = trained_run
    inputs = tmp_path / "in"
    for cls in ("class_0", "class_1"):
        (inputs / cls).mkdir(parents=True)
        for f in sorted((tree / "test" / cls).glob("*.png"))[:3]:
            (inputs / cls / f.name).write_bytes(f.read_bytes())
    (inputs / "class_0" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (inputs / "notes.txt").write_text("not an image")
    (inputs / ".hidden.png").write_bytes(b"")
    code, out, err = run(predict_cli.main, [f"ckpt_path={run_dir}", f"inputs={inputs}", "top_k=2",
                                            f"out={tmp_path / 'p.csv'}"], tmp_path, monkeypatch, capsys, "predict.py")
    assert code == 0, err[-2000:]
    rows = list(csv.DictReader((tmp_path / "p.csv").open()))
    assert len(rows) == 8  # 6 images, the corrupt one, the text file; the hidden file is not an input
    by_name = {r["input"]: r for r in rows}
    assert by_name["class_0/corrupt.png"]["error"].startswith("cannot read image")
    assert by_name["notes.txt"]["error"] == "not an image file (.txt)" and by_name["notes.txt"]["label"] == ""
    good = [r for r in rows if not r["error"]]
    assert len(good) == 6 and all(r["pred_1"] in ("class_0", "class_1", "class_2") and r["pred_2"] for r in good)
    assert all(abs(float(r["prob_1"]) + float(r["prob_2"])) <= 1 + 1e-6 and float(r["prob_1"]) >= float(r["prob_2"]) for r in good)
    summary = json.loads((tmp_path / "p_summary.json").read_text())
    assert summary["count"] == 8 and summary["failed"] == 2 and summary["labelled"] == 6
    assert summary["accuracy"] == pytest.approx(np.mean([int(r["correct"]) for r in good]))
    assert "8 predictions, accuracy" in out and "2 could not be read" in out


def test_onnx_export_matches_and_eval_reproduces_test_accuracy(trained_run, onnx_export, tmp_path, monkeypatch, capsys):
    from transferlab import eval as eval_cli

    run_dir, tree = trained_run
    v = onnx_export.verification
    assert v["max_abs_diff"] <= 1e-4 and v["argmax_equal"] and v["traced_batch"] not in v["batch_sizes"]
    assert "test split" in v["inputs"]
    assert sorted(p.name for p in onnx_export.out_dir.iterdir()) == ["README.md", "model.onnx", "transferlab.json"]
    card = (onnx_export.out_dir / "README.md").read_text()
    assert "resnet10t" in card and "python train.py" in card and "test accuracy" in card
    code, out, err = run(eval_cli.main, [f"model_path={onnx_export.out_dir / 'model.onnx'}"], tmp_path, monkeypatch, capsys, "eval.py")
    assert code == 0, err[-2000:]
    got = json.loads(next(tmp_path.rglob("eval_metrics.json")).read_text())["metrics"]["acc"]
    assert abs(got - json.loads((run_dir / "metrics.json").read_text())["test"]["acc"]) < 1e-3


def readme_snippet_logits(export_dir: Path, image_path: Path) -> np.ndarray:
    """The README's onnxruntime snippet, run as a user without transferlab would run it."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.S) if "onnxruntime as ort" in b)
    code = block.replace("exports/lite0", str(export_dir)).replace('logits("photo.jpg")', f'logits("{image_path}")')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    return scope["logits"](str(image_path))[None]


def test_sidecar_round_trip_and_the_readme_snippet(trained_run, onnx_export):
    run_dir, tree = trained_run
    side = read_sidecar(onnx_export.out_dir / "model.onnx")
    trained = load_trained(run_dir)
    assert side["classes"] == trained.classes and side["tta_hflip"] is True
    assert side["input"]["crop_size"] == 32 and side["input"]["resize_to"] == trained.storage_size
    image = sorted((tree / "test" / "class_1").glob("*.png"))[0]
    ours = predict_files(collect_inputs(image), onnx_scorer(onnx_export.out_dir / "model.onnx"), trained.preprocess,
                         trained.storage_size, trained.classes, progress=False).logits
    np.testing.assert_allclose(readme_snippet_logits(onnx_export.out_dir, image), ours, atol=1e-4, rtol=0)


def test_timm_export_loads_in_timm_alone_with_the_same_logits(trained_run, tmp_path):
    import timm

    run_dir, _ = trained_run
    result = export_run(str(run_dir), "timm", tmp_path / "timm")
    assert result.verification["max_abs_diff"] <= 1e-5
    trained = load_trained(run_dir)
    single = trained.network()
    single.tta_hflip = False
    x = torch.randn(3, 3, 32, 32)
    with torch.inference_mode():
        ref = single(x)
        a = timm.create_model(f"local-dir:{result.out_dir}", pretrained=True).eval()(x)
        b = timm.create_model("resnet10t", pretrained=True, num_classes=3,
                              pretrained_cfg_overlay=dict(file=str(result.out_dir / "model.safetensors"), num_classes=3)).eval()(x)
    torch.testing.assert_close(a, ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(b, ref, atol=1e-5, rtol=0)
    cfg = json.loads((result.out_dir / "config.json").read_text())
    assert cfg["label_names"] == trained.classes and cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    assert "mirror average" in (result.out_dir / "README.md").read_text()


def test_torchscript_export_matches(trained_run, tmp_path):
    run_dir, _ = trained_run
    result = export_run(str(run_dir), "torchscript", tmp_path / "ts")
    loaded = torch.jit.load(str(result.out_dir / "model.pt"))
    x = torch.randn(5, 3, 32, 32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), load_trained(run_dir).network()(x), atol=1e-5, rtol=0)


def test_a_calibrated_run_exports_its_logits_divided_by_the_temperature(trained_run, tmp_path):
    """eval.calibrate=temperature: the run dir exports calibrated.ckpt, whose head carries 1/T, in
    every format; the argmax (and so predict's labels) is the uncalibrated model's."""
    import timm

    _, tree = trained_run
    run_dir = train_run(tmp_path / "logs", tree, "strategy=full", "eval.calibrate=temperature")
    t = json.loads((run_dir / "metrics.json").read_text())["calibration"]["temperature"]
    trained = load_trained(run_dir)
    assert trained.checkpoint.name == "calibrated.ckpt" and trained.temperature == pytest.approx(t)
    images = make_synthetic(num_classes=3, train_per_class=1, test_per_class=4, image_size=40).test.images
    raw = engine_logits(trained, images)  # the module's forward: the tested weights, no temperature
    onnx = export_run(str(run_dir), "onnx", tmp_path / "onnx")
    assert read_sidecar(onnx.out_dir / "model.onnx")["output"]["temperature"] == pytest.approx(t)
    assert "fitted on validation" in (onnx.out_dir / "README.md").read_text()
    from transferlab.data.batch import Batch
    from transferlab.data.images.transforms import BatchPreprocess

    x = BatchPreprocess(**trained.preprocess).apply(Batch(images=images), train=False).images
    exported = onnx_scorer(onnx.out_dir / "model.onnx")(x)
    np.testing.assert_allclose(np.asarray(exported), raw / t, atol=1e-4, rtol=0)
    assert (np.asarray(exported).argmax(-1) == raw.argmax(-1)).all()
    ts = export_run(str(run_dir), "torchscript", tmp_path / "ts")
    single = timm.create_model(f"local-dir:{export_run(str(run_dir), 'timm', tmp_path / 'timm').out_dir}", pretrained=True).eval()
    with torch.inference_mode():
        np.testing.assert_allclose(torch.jit.load(str(ts.out_dir / "model.pt"))(x).numpy(), raw / t, atol=1e-4, rtol=0)
        plain = trained.module.head(trained.module.backbone(x)).numpy()  # timm has no mirror average
        np.testing.assert_allclose(single(x).numpy(), plain / t, atol=1e-4, rtol=0)


def test_lora_export_equals_the_unmerged_model(trained_run, tmp_path):
    _, tree = trained_run
    run_dir = train_run(tmp_path / "logs", tree, "strategy=lora", "trainer.max_epochs=1")
    trained = load_trained(run_dir)
    assert any("lora_" in n for n, _ in trained.module.named_parameters())
    result = export_run(str(run_dir), "onnx", tmp_path / "onnx")
    images = torch.from_numpy(decode_files(sorted((tree / "test" / "class_2").glob("*.png")), trained.storage_size,
                                           PIL_PIXEL_LIMIT).images)
    unmerged = engine_logits(trained, images)
    from transferlab.data.images.transforms import BatchPreprocess

    exported = onnx_scorer(result.out_dir / "model.onnx")(BatchPreprocess(**trained.preprocess)(images))
    np.testing.assert_allclose(exported, unmerged, atol=1e-4, rtol=0)
    assert not any("lora_" in k for k in trained.network().state_dict())  # merged: a plain resnet10t


# --- bad input ------------------------------------------------------------------------------------
def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err) and err[-1].startswith("transferlab export: ")
    return err[-1]


def test_export_refusals_are_one_line(trained_run, tmp_path, capsys, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # earlier in-process runs left handlers on closed streams
    run_dir, _ = trained_run
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("a finished export")
    assert tl(["export", str(run_dir), "--format", "onnx", "--out", str(tmp_path / "full")]) == 2
    line = _one_line(capsys)
    assert "is not empty" in line and "--overwrite" in line
    assert (tmp_path / "full" / "keep.txt").read_text() == "a finished export"
    assert tl(["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "hf")]) == 2
    line = _one_line(capsys)
    assert "--format hf" in line and "timm, onnx or torchscript" in line
    assert not (tmp_path / "hf").exists() and not list(tmp_path.glob(".hf.*"))  # nothing half-written
    assert tl(["export", str(tmp_path / "nowhere"), "--format", "onnx", "--out", str(tmp_path / "o")]) == 2
    assert "no such checkpoint or run directory" in _one_line(capsys)
    with pytest.raises(SystemExit):
        tl(["export", str(run_dir), "--format", "tflite", "--out", str(tmp_path / "o")])


def test_damaged_and_foreign_checkpoints_name_the_fix(trained_run, tmp_path):
    run_dir, _ = trained_run
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    damaged = {**ckpt, "state_dict": {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("head.")}}
    torch.save(damaged, tmp_path / "damaged.ckpt")
    with pytest.raises(CheckpointError, match=r"model tensors are not in it \(head\..*transferlab version that trained it"):
        load_trained(tmp_path / "damaged.ckpt")
    newer = {**ckpt, "transferlab": {**ckpt["transferlab"], "format": 99}}
    torch.save(newer, tmp_path / "newer.ckpt")
    with pytest.raises(CheckpointError, match="newer transferlab .checkpoint format 99.*upgrade transferlab"):
        load_trained(tmp_path / "newer.ckpt")
    older = {**ckpt, "transferlab": {**ckpt["transferlab"], "config": {**ckpt["transferlab"]["config"], "model": {"name": "resnet10t"}}}}
    torch.save(older, tmp_path / "older.ckpt")
    with pytest.raises(CheckpointError, match="does not build with this transferlab.*version that trained it"):
        load_trained(tmp_path / "older.ckpt")
    empty = tmp_path / "empty_run"
    (empty / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="has no checkpoint to use.*pass ckpt_path=<one .ckpt file>"):
        resolve_checkpoint(empty)
    with pytest.raises(CheckpointError, match="ckpt_path=last: no run under"):
        resolve_checkpoint("last", tmp_path / "no_logs")


def test_predict_bad_input_is_one_line(trained_run, onnx_export, tmp_path, monkeypatch, capsys):
    from transferlab import predict as predict_cli

    run_dir, tree = trained_run
    table = tmp_path / "texts.csv"
    table.write_text("text,label\nhello,a\n")
    lonely = tmp_path / "lonely" / "model.onnx"
    lonely.parent.mkdir()
    lonely.write_bytes((onnx_export.out_dir / "model.onnx").read_bytes())
    cases = {
        "no such inputs": ([f"ckpt_path={run_dir}", f"inputs={tmp_path / 'nope'}"], "no such file or folder"),
        "text table to an image model": ([f"ckpt_path={run_dir}", f"inputs={table}"], "is a table of texts, and this run is an image model"),
        "both models": ([f"ckpt_path={run_dir}", f"model_path={lonely}", f"inputs={tree}"], "not both"),
        "neither model": ([f"inputs={tree}"], "pass one of ckpt_path="),
        "onnx without sidecar": ([f"model_path={lonely}", f"inputs={tree}"], "has no transferlab.json beside it"),
        "not onnx": ([f"model_path={run_dir / 'metrics.json'}", f"inputs={tree}"], "run exported ONNX files"),
        "top_k zero": ([f"ckpt_path={run_dir}", f"inputs={tree}", "top_k=0"], "top_k=0 is outside its range: use a whole number >= 1"),
    }
    (tmp_path / "empty").mkdir()
    cases["empty folder"] = ([f"ckpt_path={run_dir}", f"inputs={tmp_path / 'empty'}"], "holds no files")
    for name, (args, expected) in cases.items():
        code, _, err = run(predict_cli.main, args, tmp_path, monkeypatch, capsys, "predict.py")
        assert code != 0, name
        line = error_line(code, err)
        assert expected in line, (name, line)
