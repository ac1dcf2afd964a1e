"""One table of labelled texts: a csv, tsv, jsonl or parquet file, one row per example.

A row holds a text and its label, and with `text_pair_column` a second text, so that sentence pairs
(entailment, paraphrase) are encoded as one pair. The test split is, in this order of preference, a
second file with the same columns (`test_path`), the rows a `split_column` marks test, or a fixed
stratified split seeded by `split_seed` alone (text_common.py, as text_files carves it). Validation
is the split column's val rows, else `val_fraction` of the training rows, seeded by the run's seed.

Labels may be strings or whole numbers; the classes are their distinct values as strings, sorted, in
numeric order when every label is a whole number (so label 10 comes after 9). Rows are named in
messages by their number among the data rows (1 = the first row after a header).
"""

from __future__ import annotations

import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from transferlab.data.arrays import Splits, TokenArrays
from transferlab.data.sources.registry import SourceContext, register
from transferlab.data.sources.text_common import (carve_fixed_test, check_encoding, listing, refuse_unseen, report_empty,
                                                  undecodable)
from transferlab.data.subsample import stratified_split
from transferlab.data.text.tokens import token_arrays
from transferlab.errors import ConfigError, DataError

log = logging.getLogger(__name__)

PATH_KEY = "data.source_args.path"
TEST_PATH_KEY = "data.source_args.test_path"
FORMAT_KEY = "data.source_args.format"
FORMATS = ("csv", "tsv", "jsonl", "parquet")
# A .json file is read as JSON lines: one object per row is what a table of texts is stored as.
_FORMAT_OF_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".parquet": "parquet"}
_SPLITS = ("train", "val", "test")
_WHOLE_NUMBER = re.compile(r"[+-]?\d+")


@dataclass(frozen=True)
class Columns:
    text: str
    label: str
    pair: str | None = None
    split: str | None = None


@dataclass
class Rows:
    """The usable rows of one split: texts (and pair texts) with their labels as strings."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[str]


# --- reading ------------------------------------------------------------------------------------
def table_file(path: str | Path | None, key: str) -> Path:
    if path is None or str(path).strip() in ("", "???"):  # ??? reaches sources as text: the YAML's unset mark
        raise DataError(f"{key} is unset: pass {key}=<a csv, tsv, jsonl or parquet file of texts and labels>")
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise DataError(f"{key} '{path}' {what}: pass {key}=<a csv, tsv, jsonl or parquet file of texts and labels>")
    return file


def table_format(path: Path, format: str) -> str:
    if format != "auto":
        if format not in FORMATS:
            raise ConfigError(f"{FORMAT_KEY}={format!r} is unknown: use auto (from the file's suffix) or one of {', '.join(FORMATS)}")
        return format
    found = _FORMAT_OF_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise DataError(f"cannot tell the format of {path} from its suffix {path.suffix or '(none)'}: name it .csv, .tsv, "
                        f".jsonl or .parquet, or set {FORMAT_KEY}={'|'.join(FORMATS)}")
    return found


def _decoded(path: Path, encoding: str) -> str:
    """The file as text. Decoded here rather than by pandas, which reads in chunks and so reports
    where decoding failed relative to a chunk, not the file."""
    data = path.read_bytes()
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise undecodable(path, encoding, e, line=data.count(b"\n", 0, e.start) + 1) from e


def _parse(path: Path, format: str, decoded: str | None) -> pd.DataFrame:
    if format == "parquet":
        return pd.read_parquet(path)  # parquet stores strings as UTF-8 whatever `encoding` says
    text = io.StringIO(decoded)
    if format == "jsonl":
        # dtype=False: values stay as written (a label "007" is not made the number 7).
        return pd.read_json(text, lines=True, dtype=False)
    # Every cell as a string, and only an empty cell is missing: a text reading "NA" or "null" is a text.
    return pd.read_csv(text, sep="\t" if format == "tsv" else ",", dtype=str, keep_default_na=False, na_values=[""])


def read_table(path: Path, format: str, encoding: str) -> pd.DataFrame:
    decoded = None if format == "parquet" else _decoded(path, encoding)
    try:
        frame = _parse(path, format, decoded)
    except pd.errors.EmptyDataError:
        frame = pd.DataFrame()
    except ImportError as e:  # pandas reads parquet through pyarrow, an optional dependency of pandas
        raise DataError(f"reading {path} as parquet needs pyarrow ({e}): pip install pyarrow") from e
    except (ValueError, pd.errors.ParserError) as e:  # malformed csv/json, or not a parquet file (ArrowInvalid)
        reason = " ".join(str(e).split())[:200]
        raise DataError(f"{path} cannot be read as {format} ({reason}): fix the file, or set {FORMAT_KEY}= to its real "
                        f"format ({', '.join(FORMATS)})") from e
    if len(frame) == 0:
        raise DataError(f"{path} holds no rows: give a table with a header and one row per text (read as {format})")
    # Row i of the file is index i, also in a split's rows, and messages count from it (a parquet
    # file may carry an index of its own).
    return frame.reset_index(drop=True)


def require_columns(frame: pd.DataFrame, path: Path, format: str, columns: Columns) -> None:
    wanted = [("text_column", columns.text), ("label_column", columns.label), ("text_pair_column", columns.pair),
              ("split_column", columns.split)]
    found = [str(c) for c in frame.columns]
    for key, name in wanted:
        if name is not None and name not in frame.columns:
            raise DataError(f"{path} has no column {name!r} (data.source_args.{key}); its columns, read as {format}, are "
                            f"{listing(found, limit=20)}: set data.source_args.{key}=<one of them>")


# --- rows ---------------------------------------------------------------------------------------
def _strings(values: pd.Series) -> list[str | None]:
    """Cells as strings (a number as Python writes it), None where missing."""
    return [None if _missing(v) else str(v) for v in values.tolist()]


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # a list or dict in a JSON cell is not missing
        return False


def _row_numbers(frame: pd.DataFrame, positions: list[int]) -> list[str]:
    return [str(int(frame.index[i]) + 1) for i in positions]


def label_strings(frame: pd.DataFrame, where: object, column: str) -> list[str]:
    labels = [None if v is None else v.strip() for v in _strings(frame[column])]
    unlabelled = [i for i, v in enumerate(labels) if not v]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} rows of {where} have no label in column {column!r} (data rows "
                        f"{listing(_row_numbers(frame, unlabelled))}): fill them in, or drop those rows")
    return labels


def table_rows(frame: pd.DataFrame, where: object, columns: Columns, strict: bool) -> Rows:
    """The rows with a label and non-empty text(s); empty ones are skipped and counted (strict: refused)."""
    labels = label_strings(frame, where, columns.label)
    texts = [v or "" for v in _strings(frame[columns.text])]
    pairs = None if columns.pair is None else [v or "" for v in _strings(frame[columns.pair])]
    # A pair with one empty half is as unusable as an empty text.
    empty = [i for i in range(len(texts)) if not texts[i].strip() or (pairs is not None and not pairs[i].strip())]
    report_empty([f"row {n}" for n in _row_numbers(frame, empty)], where, strict)
    if len(empty) == len(texts):
        raise DataError(f"every text in {where} is empty (column {columns.text!r}"
                        f"{f' or {columns.pair!r}' if columns.pair else ''}): point data.source_args.text_column at the texts")
    keep = sorted(set(range(len(texts))) - set(empty))
    return Rows([texts[i] for i in keep], None if pairs is None else [pairs[i] for i in keep], [labels[i] for i in keep])


def class_names(labels: list[str]) -> list[str]:
    distinct = set(labels)
    if all(_WHOLE_NUMBER.fullmatch(label) for label in distinct):
        return sorted(distinct, key=lambda label: (int(label), label))
    return sorted(distinct)


def split_frames(frame: pd.DataFrame, path: Path, column: str) -> dict[str, pd.DataFrame]:
    """The rows of each split a `split_column` names (case and surrounding spaces aside)."""
    values = [(v or "").strip().lower() for v in _strings(frame[column])]
    wrong = sorted({v or "(empty)" for v in values if v not in _SPLITS})
    if wrong:
        raise DataError(f"column {column!r} of {path} (data.source_args.split_column) has values other than "
                        f"{', '.join(_SPLITS)}: {listing(wrong)}; rename them to train, val or test, or set "
                        "data.source_args.split_column=null to carve the test split")
    parts = {s: frame[[v == s for v in values]] for s in _SPLITS}
    for needed in ("train", "test"):
        if len(parts[needed]) == 0:
            raise DataError(f"column {column!r} of {path} marks no row {needed}: mark some rows {needed}, or set "
                            "data.source_args.split_column=null to carve the test split")
    return {s: part for s, part in parts.items() if len(part)}


# --- splits -------------------------------------------------------------------------------------
def _arrays(rows: Rows, classes: list[str], context: SourceContext) -> TokenArrays:
    index = {name: i for i, name in enumerate(classes)}
    return token_arrays(rows.texts, [index[label] for label in rows.labels], classes, context.tokenize, "text_table", pairs=rows.pairs)


def _check_fraction(key: str, value: float) -> float:
    if isinstance(value, bool) or not 0 <= float(value) < 1:
        raise DataError(f"data.source_args.{key}={value} is outside [0, 1): use e.g. 0.1, or 0 for none")
    return float(value)


def _training_classes(rows: Rows, where: object, column: str) -> list[str]:
    classes = class_names(rows.labels)
    if len(classes) < 2:
        raise DataError(f"{where} has {len(classes)} label ({listing(classes)}) in column {column!r} and a classifier "
                        "needs at least 2: add rows of another label, or point data.source_args.label_column at the labels")
    return classes


def _frames(file: Path, format: str, encoding: str, columns: Columns, test_path: str | None) -> dict[str, tuple[pd.DataFrame, str]]:
    """Each split's rows as read and what messages call them: the file, or the split within it."""
    fmt = table_format(file, format)
    frame = read_table(file, fmt, encoding)
    require_columns(frame, file, fmt, columns)
    if columns.split is not None:
        return {s: (part, f"the {s} rows of {file}") for s, part in split_frames(frame, file, columns.split).items()}
    frames = {"train": (frame, str(file))}
    if test_path is not None:
        test_file = table_file(test_path, TEST_PATH_KEY)
        test_fmt = table_format(test_file, format)
        test = read_table(test_file, test_fmt, encoding)
        require_columns(test, test_file, test_fmt, Columns(columns.text, columns.label, columns.pair))
        frames["test"] = (test, str(test_file))
    return frames


@register("text_table")
def load_text_table(
    path: str | None = None,
    context: SourceContext = SourceContext(),
    format: str = "auto",
    text_column: str = "text",
    label_column: str = "label",
    text_pair_column: str | None = None,
    test_path: str | None = None,
    split_column: str | None = None,
    test_fraction: float = 0.3,
    split_seed: int = 0,
    val_fraction: float = 0.1,
    strict: bool = False,
    encoding: str = "utf-8",
) -> Splits:
    file = table_file(path, PATH_KEY)
    if test_path is not None and split_column is not None:
        raise ConfigError(f"{TEST_PATH_KEY} and data.source_args.split_column are both set: the test split comes from one "
                          "of them; set the other to null")
    val_fraction = _check_fraction("val_fraction", val_fraction)
    check_encoding(encoding)
    columns = Columns(text_column, label_column, text_pair_column, split_column)
    frames = _frames(file, format, encoding, columns, test_path)
    rows = {s: table_rows(frame, where, columns, strict) for s, (frame, where) in frames.items()}
    classes = _training_classes(rows["train"], frames["train"][1], label_column)
    for split in ("val", "test"):
        if split in rows:
            refuse_unseen(frames[split][1], rows[split].labels, classes, "labels the training rows lack",
                          f"add training rows with them, or remove them from the {split} rows")
    arrays = {s: _arrays(r, classes, context) for s, r in rows.items()}
    pool = arrays["train"]
    test = arrays.get("test")
    if test is None:
        pool, test = carve_fixed_test(pool, test_fraction, split_seed, "without data.source_args.test_path or split_column")
    val = arrays.get("val")
    if val is None and val_fraction > 0:
        rest, val_idx = stratified_split(pool.labels, seed=context.seed, val_fraction=val_fraction, classes=classes, unit="texts")
        pool, val = pool.subset(rest), pool.subset(val_idx)
    log.info("texts from %s: %d classes, train pool %d, val %s, test %d%s", file, len(classes), len(pool),
             len(val) if val is not None else "none", len(test), ", text pairs" if text_pair_column else "")
    return Splits(train=pool, test=test, val=val)
