"""The confusion matrix as numbers and as a picture: rows are the true class, columns the predicted.

It sits in the base layer because both sides use it: engine/recording.py draws each run's picture
beside its metrics.json (neural runs and baselines alike, from the Outcome's matrix), and report/
reads the matrices back for per-class recall. Drawing uses matplotlib's object API on an Agg canvas,
so no display is needed and the caller's pyplot backend is left alone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from transferlab.utils.io import atomic_write

PICTURE_FILE = "confusion_matrix.png"
DPI = 110
# Above this many classes the cells are too small for their counts; the shading still shows.
MAX_ANNOTATED_CLASSES = 30
MAX_LABEL_CHARS = 24


def check_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str]) -> np.ndarray:
    """`matrix` as a square integer array with one row per class; a ValueError naming what is off."""
    counts = np.asarray(matrix)
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"a confusion matrix is square; got shape {counts.shape}")
    if counts.shape[0] != len(classes):
        raise ValueError(f"a confusion matrix of {counts.shape[0]} classes with {len(classes)} class names")
    return counts.astype(np.int64)


def row_normalised(counts: np.ndarray) -> np.ndarray:
    """Each row as shares of its true class; a class absent from the split stays 0, not NaN."""
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)


def per_class_recall(matrix: Sequence[Sequence[int]]) -> list[float | None]:
    """Per true class, the share predicted as itself; None for a class the split does not hold."""
    counts = np.asarray(matrix)
    totals = counts.sum(axis=1)
    return [float(counts[i, i] / t) if t > 0 else None for i, t in enumerate(totals)]


def per_class_scores(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> list[dict]:
    """Per class: precision (None when nothing was predicted as it), recall (None when the split
    holds none of it), F1 = 2 TP / (2 TP + FP + FN) (None when the class is neither true nor
    predicted anywhere) and support, the class's true count. A balanced few-shot subset drawn from a
    skewed pool shows here as a rare class's low precision, which accuracy and macro-F1 hide."""
    counts = check_confusion(matrix, class_names)
    true, predicted = counts.sum(axis=1), counts.sum(axis=0)
    rows = []
    for i, name in enumerate(class_names):
        tp = int(counts[i, i])
        rows.append({
            "class": str(name),
            "precision": tp / int(predicted[i]) if predicted[i] > 0 else None,
            "recall": tp / int(true[i]) if true[i] > 0 else None,
            "f1": 2 * tp / int(true[i] + predicted[i]) if true[i] + predicted[i] > 0 else None,
            "support": int(true[i]),
        })
    return rows


def _short(name: str) -> str:
    name = str(name)
    return name if len(name) <= MAX_LABEL_CHARS else name[: MAX_LABEL_CHARS - 1] + "…"


def _layout(n: int) -> tuple[float, float, float]:
    """(matrix side in inches, tick font size, cell font size) for n classes: the picture grows with
    the classes until the cells are a few points wide, then the fonts shrink instead."""
    side = float(np.clip(0.55 * n, 3.5, 20.0))
    cell_pt = side * 72 / n
    return side, float(np.clip(cell_pt * 0.55, 4.0, 10.0)), float(np.clip(cell_pt * 0.32, 5.0, 10.0))


def confusion_figure(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str) -> Figure:
    """Counts in the cells (up to MAX_ANNOTATED_CLASSES classes), shading by the row-normalised share."""
    counts = check_confusion(matrix, classes)
    n = len(classes)
    shares = row_normalised(counts)
    side, tick_size, cell_size = _layout(n)
    label_room = 0.09 * max((len(_short(c)) for c in classes), default=1) * tick_size / 8
    fig = Figure(figsize=(side + label_room + 2.4, side + label_room + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax, fraction=0.035, pad=0.03, shrink=0.8)
    colorbar.set_label("share of the true class (row-normalised)")

    labels = [_short(c) for c in classes]
    ax.set_xticks(range(n), labels, fontsize=tick_size, rotation=90 if n > 8 else 45,
                  ha="center" if n > 8 else "right", rotation_mode="anchor" if n <= 8 else "default")
    ax.set_yticks(range(n), labels, fontsize=tick_size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if n <= MAX_ANNOTATED_CLASSES:
        for (i, j), count in np.ndenumerate(counts):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=cell_size,
                    color="white" if shares[i, j] > 0.5 else "black")
    ax.set_title(title, fontsize=11 + side / 5)  # large pictures are viewed shrunk
    fig.tight_layout()
    return fig


def draw_confusion(matrix: Sequence[Sequence[int]], classes: Sequence[str], title: str, path: str | Path) -> Path:
    """The picture of `matrix` written to `path` (PNG), replaced whole or not at all."""
    fig = confusion_figure(matrix, classes, title)
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI))
