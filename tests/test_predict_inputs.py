"""predict.py's inputs are walked as the data sources walk a folder (data/walk.py): each file once,
no hidden entries or __MACOSX, links only inside the folder; the folder names are the labels."""

import logging
import os

from transferlab.inference.inputs import collect_inputs


def test_a_tree_is_walked_by_the_data_sources_rules(tmp_path, caplog):
    root, outside = tmp_path / "in", tmp_path / "elsewhere"
    for rel in ("cat/1.png", "cat/sub/2.png", "dog/3.png", "top.png", "notes.txt", "cat/.hidden.png",
                "__MACOSX/cat/._1.png", ".cache/4.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    outside.mkdir()
    (outside / "5.png").write_bytes(b"x")
    os.symlink(outside / "5.png", root / "dog" / "out.png")  # leads out of the folder: skipped
    os.symlink(root / "cat", root / "zz_cat")  # a second path to cat/ (walked after it): its files count once
    with caplog.at_level(logging.WARNING):
        rows = collect_inputs(root)
    assert [(r.name, r.label) for r in rows] == [
        ("cat/1.png", "cat"), ("cat/sub/2.png", "cat"), ("dog/3.png", "dog"), ("notes.txt", None), ("top.png", None)]
    assert rows[3].problem == "not an image file (.txt)" and rows[0].problem is None
    assert "skipped 1 link that points outside the root (dog/out.png)" in caplog.text
