"""Every score of one candidate's features, each timed. A score that needs the source classifier
is None (not applicable) where the candidate has none."""

from __future__ import annotations

import time
from typing import Callable

from transferlab.ranking.features import CandidateFeatures
from transferlab.ranking.hscore import hscore
from transferlab.ranking.leep import leep
from transferlab.ranking.logme import logme
from transferlab.ranking.nce import nce
from transferlab.ranking.probe import probe_accuracy

# Name -> score of a candidate's features; None where it does not apply. Higher is better for all.
SCORES: dict[str, Callable[[CandidateFeatures], float | None]] = {
    "logme": lambda f: logme(f.train_x, f.train_y, f.num_classes),
    "nce": lambda f: None if f.source_logits is None else nce(f.source_logits.argmax(-1), f.train_y),
    "leep": lambda f: None if f.source_logits is None else leep(f.source_logits, f.train_y, f.num_classes),
    "hscore": lambda f: hscore(f.train_x, f.train_y),
    "probe_val_acc": lambda f: probe_accuracy(f.train_x, f.train_y, f.val_x, f.val_y, f.num_classes),
}


def score_all(features: CandidateFeatures) -> tuple[dict[str, float | None], dict[str, float]]:
    """(score per name, seconds per name)."""
    values, seconds = {}, {}
    for name, score in SCORES.items():
        start = time.perf_counter()
        values[name] = score(features)
        seconds[name] = time.perf_counter() - start
    return values, seconds
