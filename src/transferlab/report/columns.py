"""Reading values back out of the job table, whose columns pandas fills with NA where a job lacks them."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd


def numeric(df: pd.DataFrame, col: str) -> pd.Series:
    """`col` as floats (NaN where missing or not a number); all NaN when the column is absent."""
    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype=float)
    return pd.to_numeric(df[col], errors="coerce").astype(float)


def is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # list-like: present
        return False


def text(value: Any, missing: str = "?") -> str:
    """A cell as a label: integers stay integers even where gaps made the column float."""
    if is_missing(value):
        return missing
    if isinstance(value, (float, np.floating)):
        return str(int(value)) if float(value).is_integer() else f"{float(value):g}"
    return str(value)
