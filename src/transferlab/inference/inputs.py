"""What predict.py is given: one image file, a folder of images, or a `<class>/<image>` tree.

In a tree the folder names are the true labels, so predictions come with accuracy. Every regular,
visible file becomes a row: a file that is not an image, or that does not decode, is a row marked
with why, never a reason to stop.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from transferlab.data.images.decode import has_image_extension
from transferlab.errors import DataError

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # as the CSV shows it: relative to the inputs folder
    label: str | None  # the class folder it sits in, in a tree
    problem: str | None = None  # why it is not read as an image (decode errors come later)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and all(_visible(q) for q in p.relative_to(folder).parts))


def _entry(path: Path, root: Path, label: str | None) -> InputFile:
    problem = None if has_image_extension(path) else f"not an image file ({path.suffix or 'no extension'})"
    return InputFile(path, str(path.relative_to(root)) if path != root else path.name, label, problem)


def collect_inputs(inputs: str | Path, modality: str = "image") -> list[InputFile]:
    path = Path(inputs).expanduser()
    if modality != "image":
        raise DataError(f"predict.py handles image models; this is a {modality} model, whose inputs (a table or folder of "
                        "texts) predict.py does not read yet: evaluate it with python eval.py ckpt_path=<checkpoint>")
    if path.is_file():
        if path.suffix.lower() in TEXT_SUFFIXES:
            raise DataError(f"inputs={inputs} is a table of texts, and this run is an image model: pass an image file, "
                            "a folder of images or a <class>/<image> tree")
        return [_entry(path, path, None)]
    if not path.is_dir():
        raise DataError(f"inputs={inputs}: no such file or folder: pass an image file, a folder of images or a <class>/<image> tree")
    entries = []
    for child in sorted(p for p in path.iterdir() if _visible(p.name)):
        if child.is_dir():
            entries += [_entry(f, path, child.name) for f in _files_under(child)]
        elif child.is_file():
            entries.append(_entry(child, path, None))
    if not entries:
        raise DataError(f"inputs={inputs} holds no files: put the images to predict in it")
    return entries
