"""What the text sources share, so that a folder of files and a table answer the same input alike.

The test split a source carves is stratified and seeded by its own `split_seed`, never the run's
seed, so runs with different seeds are scored on the same texts. Empty texts are skipped and counted
(an error with `strict`), text that does not decode names the encoding option, and a test label
never seen in training is an error, since no head could predict it.
"""

from __future__ import annotations

import codecs
import logging
from typing import Iterable

from transferlab.data.arrays import TokenArrays
from transferlab.data.subsample import stratified_split
from transferlab.errors import DataError

log = logging.getLogger(__name__)

ENCODING_KEY = "data.source_args.encoding"


def listing(items: list[str], limit: int = 5) -> str:
    """The first few items and how many more: messages stay one line for any number of them."""
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")


def check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError) as e:
        raise DataError(f"{ENCODING_KEY}={encoding!r} is not an encoding Python knows: use e.g. utf-8, latin-1 or cp1252") from e


def undecodable(where: object, encoding: str, error: UnicodeDecodeError, line: int | None = None) -> DataError:
    at = f"at byte {error.start}" + (f", line {line}" if line is not None else "")
    return DataError(f"{where} is not valid {encoding} ({error.reason} {at}): set {ENCODING_KEY}=<its encoding> "
                     "(latin-1 reads any bytes)")


def report_empty(empty: list[str], where: object, strict: bool) -> None:
    """Skip-and-count, or with `strict` refuse: an empty text has no words to learn a label from."""
    if not empty:
        return
    if strict:
        raise DataError(f"{len(empty)} empty texts in {where}: {listing(empty)}; remove them, or set "
                        "data.source_args.strict=false to skip them")
    log.warning("skipped %d empty texts in %s: %s", len(empty), where, listing(empty))


def refuse_unseen(where: object, found: Iterable[str], classes: list[str], lacking: str, fix: str) -> None:
    """`lacking` says what the unseen ones are, e.g. "classes the training folder lacks"."""
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{where} has {lacking} ({listing(unknown)}): a test label never seen in training cannot be "
                        f"predicted; {fix}")


def carve_fixed_test(pool: TokenArrays, test_fraction: float, split_seed: int, unless: str) -> tuple[TokenArrays, TokenArrays]:
    """(training pool, test): `test_fraction` of each class, seeded by `split_seed` alone."""
    if isinstance(test_fraction, bool) or not 0 < float(test_fraction) < 1:
        raise DataError(f"data.source_args.test_fraction={test_fraction}: use a fraction in (0, 1) {unless}")
    rest, test_idx = stratified_split(pool.labels, seed=int(split_seed), val_fraction=float(test_fraction), classes=pool.classes)
    return pool.subset(rest), pool.subset(test_idx)
