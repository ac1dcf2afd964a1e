"""What predict.py is given: one image file, a folder of images, or a `<class>/<image>` tree.

In a tree the folder names are the true labels, so predictions come with accuracy. Folders are
walked as the data sources walk them (data/walk.py: links only inside the folder, each file once,
no hidden entries or __MACOSX), and what the walk skips is a warning. Every regular, visible file
becomes a row: a file that is not an image, or that does not decode, is a row marked with why,
never a reason to stop.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from transferlab.data.images.decode import has_image_extension
from transferlab.data.walk import SKIP_TEXT, Folder, Walked, walk_files
from transferlab.errors import DataError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".txt")


@dataclass(frozen=True)
class InputFile:
    path: Path
    name: str  # as the CSV shows it: relative to the inputs folder
    label: str | None  # the class folder it sits in, in a tree
    problem: str | None = None  # why it is not read as an image (decode errors come later)


def _warn_skipped(walked: Walked, folder: Path) -> None:
    for kind, paths in walked.skipped.items():
        if paths:
            one, many, fix = SKIP_TEXT[kind]
            log.warning("inputs %s: skipped %d %s (%s); %s", folder, len(paths), one if len(paths) == 1 else many,
                        ", ".join(str(p.relative_to(folder)) for p in paths[:5]), fix)


def _label(file: Path, root: Path) -> str | None:
    """The top folder below `root` that holds the file (its class in a tree); None for a file in `root` itself."""
    parts = file.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


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
    real = os.path.realpath(path)
    walked = walk_files(Folder(path, real), real)
    _warn_skipped(walked, path)
    entries = [_entry(f, path, _label(f, path)) for f in sorted(walked.files)]  # by name, each folder's files together
    if not entries:
        raise DataError(f"inputs={inputs} holds no files: put the images to predict in it")
    return entries
