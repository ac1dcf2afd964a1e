"""The rank table: one row per candidate, each score, its seconds and its rank; as csv and markdown.

Ranks are 1 for the best (highest) score, ties sharing the better rank; a score that does not apply
to a candidate is empty (n/a in markdown), never 0, and takes no rank.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from transferlab.utils.io import atomic_write_bytes

CSV_NAME = "ranking.csv"
MD_NAME = "ranking.md"


def rank_column(values: list[float | None]) -> list[int | None]:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return [None if v is None or math.isnan(v) else 1 + sum(other > v for other in present) for v in values]


def add_ranks(rows: list[dict], scores: list[str]) -> list[dict]:
    for name in scores:
        for row, rank in zip(rows, rank_column([row.get(name) for row in rows])):
            row[f"rank_{name}"] = rank
    return rows


def _cell(value) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def columns(rows: list[dict]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def write_csv(rows: list[dict], path: Path) -> Path:
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns(rows), lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    atomic_write_bytes(path, buffer.getvalue().encode())
    return path


def read_csv(path: str | Path) -> list[dict]:
    """A written table back, numbers as numbers and empty cells as None."""
    def value(text: str):
        if text == "":
            return None
        try:
            number = float(text)
        except ValueError:
            return text
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number

    with open(path, newline="") as f:
        return [{k: value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def markdown(rows: list[dict], scores: list[str]) -> str:
    """Scores with their rank in brackets, then the seconds of the features and of the scores."""
    header = ["candidate", *scores, "features s", "scores s", "cache"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [f"`{row['candidate']}`"]
        for name in scores:
            value = row.get(name)
            cells.append("n/a" if value is None else f"{value:.4g} ({row.get(f'rank_{name}')})")
        score_s = sum(row.get(f"{name}_s") or 0.0 for name in scores)
        cells += [f"{row['features_s']:.1f}", f"{score_s:.1f}", str(row.get("cache", ""))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_markdown(rows: list[dict], scores: list[str], path: Path, preamble: str = "") -> Path:
    atomic_write_bytes(path, (preamble + markdown(rows, scores)).encode())
    return path
