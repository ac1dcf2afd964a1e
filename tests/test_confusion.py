"""The test split's confusion matrix: counted in the module from the logits that are scored, kept in
the run record, drawn beside it, for image and text runs alike; the picture never costs a run its
record."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from transferlab.utils.confusion import PICTURE_FILE, confusion_figure, draw_confusion, per_class_recall

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()


def _cell_numbers(fig) -> list[str]:
    (ax, *_) = fig.axes
    return [t.get_text() for t in ax.texts]


# --- the picture --------------------------------------------------------------------------------


def test_few_classes_show_counts_and_names_on_both_axes(tmp_path):
    matrix = [[5, 1, 0], [0, 4, 2], [1, 0, 6]]
    classes = ["cat", "dog", "a class name far too long to fit beside the matrix"]
    fig = confusion_figure(matrix, classes, "m · s\ntest acc 0.7895")
    ax = fig.axes[0]
    assert _cell_numbers(fig) == [str(v) for row in matrix for v in row]
    assert [t.get_text() for t in ax.get_yticklabels()][:2] == ["cat", "dog"]
    assert [t.get_text() for t in ax.get_xticklabels()][:2] == ["cat", "dog"]
    assert ax.get_yticklabels()[2].get_text().endswith("…")  # long names are cut, not left to overlap
    assert ax.get_title() == "m · s\ntest acc 0.7895"
    assert ax.get_ylabel() == "true class" and ax.get_xlabel() == "predicted class"
    # Shading is by row share: a class's row sums to 1 whatever its size.
    shades = np.asarray(ax.images[0].get_array())
    assert shades.sum(axis=1) == pytest.approx([1.0, 1.0, 1.0]) and shades[0, 0] == pytest.approx(5 / 6)
    path = draw_confusion(matrix, classes, "title", tmp_path / PICTURE_FILE)
    assert_png(path)


def test_many_classes_drop_the_cell_numbers_but_keep_every_name(tmp_path):
    n = 100
    matrix = (np.eye(n, dtype=int) * 9 + 1).tolist()
    classes = [f"class_{i}" for i in range(n)]
    fig = confusion_figure(matrix, classes, "t")
    assert _cell_numbers(fig) == []
    assert len(fig.axes[0].get_xticklabels()) == n and len(fig.axes[0].get_yticklabels()) == n
    path = draw_confusion(matrix, classes, "t", tmp_path / "many.png")
    assert_png(path)
    with Image.open(path) as im:  # room for a hundred readable names
        assert min(im.size) > 1500


def test_a_class_absent_from_the_split_is_shaded_zero_and_has_no_recall():
    fig = confusion_figure([[3, 1], [0, 0]], ["a", "b"], "t")
    assert np.asarray(fig.axes[0].images[0].get_array())[1].tolist() == [0.0, 0.0]
    assert per_class_recall([[3, 1], [0, 0]]) == [0.75, None]


def test_a_matrix_that_does_not_fit_its_classes_is_refused(tmp_path):
    with pytest.raises(ValueError, match="square"):
        draw_confusion([[1, 2, 3]], ["a"], "t", tmp_path / "x.png")
    with pytest.raises(ValueError, match="2 classes with 3 class names"):
        draw_confusion([[1, 0], [0, 1]], ["a", "b", "c"], "t", tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


# --- a run's matrix -----------------------------------------------------------------------------

IMAGE_RUN = [
    "model=timm", "model.name=resnet10t", "model.weights=none", "data=synthetic", "data.image_size=32",
    "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false", "data.source_args.train_per_class=8",
    "data.source_args.test_per_class=9", "data.val_per_class=4", "data.batch_size=8", "data.eval_batch_size=16",
    "trainer.max_epochs=1",
]


def _train(args, tmp_path, monkeypatch, capsys) -> tuple[dict, Path]:
    from test_bad_input import run
    from test_cli import metrics_of

    from transferlab import train as train_cli

    code, _, err = run(train_cli.main, args, tmp_path, monkeypatch, capsys)
    assert code == 0, err[-3000:]
    return metrics_of(tmp_path)


def assert_matrix_is_the_test_split(m: dict, run_dir: Path, classes: list[str]) -> None:
    confusion = m["confusion"]
    assert confusion["split"] == "test" and confusion["classes"] == classes
    counts = np.asarray(confusion["matrix"])
    assert counts.shape == (len(classes), len(classes))
    assert counts.sum() == m["data_sizes"]["test"]
    assert abs(np.trace(counts) / counts.sum() - m["test"]["acc"]) <= 1e-6
    assert confusion["picture"] == PICTURE_FILE
    assert_png(run_dir / PICTURE_FILE)


# The last eval batch is partial (36 test images in 16s), and the mirror average is what is scored.
@pytest.mark.parametrize("hflip", [False, True], ids=["plain", "eval_hflip"])
def test_an_image_run_records_the_test_confusion_matrix_and_draws_it(tmp_path, monkeypatch, capsys, hflip):
    m, run_dir = _train([*IMAGE_RUN, f"data.eval_hflip={str(hflip).lower()}"], tmp_path, monkeypatch, capsys)
    assert m["status"] == "completed" and m["data_sizes"]["test"] == 36
    assert_matrix_is_the_test_split(m, run_dir, [f"class_{i}" for i in range(4)])


def test_a_text_run_records_the_test_confusion_matrix_and_draws_it(tmp_path, monkeypatch, capsys):
    from test_text import make_encoder, make_texts

    encoder, texts = make_encoder(tmp_path / "enc"), make_texts(tmp_path / "texts", per_class=20)
    args = ["model=hf", f"model.name={encoder}", f"model.weights=file:{encoder}", "data=text_files",
            f"data.source_args.root={texts}", "data.max_length=32", "data.batch_size=8", "data.val_fraction=0.2",
            "trainer.max_epochs=1", "trainer.accelerator=cpu", "+trainer.enable_progress_bar=false"]
    m, run_dir = _train(args, tmp_path / "logs", monkeypatch, capsys)
    assert m["status"] == "completed" and m["config"]["modality"] == "text"
    assert_matrix_is_the_test_split(m, run_dir, ["topic0", "topic1", "topic2"])
