"""Hydra command-line overrides as data: the one parser that resume, the report and the Optuna
callback share, and a run directory's overrides read back from `.hydra/overrides.yaml`."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable


@dataclass(frozen=True)
class Override:
    text: str  # as typed: "+trainer.limit_test_batches=4"
    prefix: str  # "", "+", "++" or "~"
    key: str  # "trainer.limit_test_batches"
    value: str | None  # the text after "=", None when there is none ("~key")

    @property
    def top(self) -> str:
        """The config node it changes: "trainer" for trainer.max_epochs, "strategy" for strategy=full."""
        return self.key.split(".", 1)[0].split("/", 1)[0]

    @property
    def leaf(self) -> str:
        return self.key.rsplit(".", 1)[-1].rsplit("/", 1)[-1]

    def under(self, *keys: str) -> bool:
        """Whether this override sets one of `keys` or something below it."""
        return any(self.key == k or self.key.startswith(k + ".") for k in keys)

    def scalar(self) -> Any:
        return parse_scalar(self.value) if self.value is not None else None


def parse(text: str) -> Override:
    text = str(text)
    prefix = next((p for p in ("++", "+", "~") if text.startswith(p)), "")
    key, sep, value = text[len(prefix):].partition("=")
    return Override(text=text, prefix=prefix, key=key.strip(), value=value if sep else None)


def parse_all(texts: Iterable[str]) -> list[Override]:
    return [parse(t) for t in texts]


def parse_scalar(text: str) -> Any:
    """An override's value as Hydra would read a plain scalar: null, int, float, bool, else the text."""
    low = text.strip().lower()
    if low in ("null", "none", "~"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def same_value(value: Any, text: str) -> bool:
    """Does an override's value text stand for `value` (floats compared with a relative tolerance)?"""
    parsed = parse_scalar(text)
    if isinstance(value, bool) or value is None or isinstance(parsed, bool) or parsed is None:
        return parsed == value or (value is not None and str(value) == text)
    if isinstance(value, (int, float)) and isinstance(parsed, (int, float)):
        return math.isclose(float(parsed), float(value), rel_tol=1e-9, abs_tol=0.0)
    return text == str(value)


def values_of(texts: Iterable[str]) -> dict[str, str]:
    """key -> value text, for the overrides that set a value (the last one wins, as in Hydra)."""
    return {o.key: o.value for o in parse_all(texts) if o.value is not None}


def read_overrides(run_dir: str | Path) -> list[str] | None:
    """A run's command-line overrides from Hydra's `.hydra/overrides.yaml`; None without the file."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return None
    try:
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(path)]
    except Exception:  # half-written or hand-edited: the plain lines are still useful
        lines = path.read_text(errors="replace").splitlines()
        return [ln.lstrip("- ").strip() for ln in lines if ln.strip()]
