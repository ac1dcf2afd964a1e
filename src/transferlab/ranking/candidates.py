"""Candidates as Hydra overrides, each composed into the run config train.py would build.

A candidate is one string of comma-separated overrides (`model=efficientnet_lite0,data.image_size=128`);
the overrides shared by every candidate (the data: `data=fashion_mnist data.samples_per_class=100`)
come first, so a candidate's own value wins.
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import DictConfig

from transferlab import CONFIG_DIR
from transferlab.config.checks import check_config
from transferlab.errors import ConfigError, composition_error, user_error
from transferlab.utils.resolvers import register as register_resolvers


@dataclass(frozen=True)
class Candidate:
    label: str  # as given on the command line
    overrides: tuple[str, ...]


def split_overrides(text: str) -> list[str]:
    """Split on the commas that separate overrides, not those inside [..], {..}, (..) or quotes."""
    parts, depth, quote, current = [], 0, "", []
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(ch)
    parts.append("".join(current).strip())
    return [p for p in parts if p]


def parse_candidates(texts: list[str]) -> list[Candidate]:
    if not texts:
        raise ConfigError("no candidates to rank: pass --candidates followed by one or more candidates, e.g. "
                          "--candidates model=efficientnet_lite0 model=efficientnet_lite0,data.image_size=128")
    candidates = []
    for text in texts:
        overrides = split_overrides(text)
        if not overrides or any("=" not in o and not o.startswith("~") for o in overrides):
            raise ConfigError(f"candidate {text!r} is not a list of overrides: write key=value pairs joined by commas, "
                              "e.g. model=efficientnet_lite0,data.image_size=128")
        candidates.append(Candidate(label=text, overrides=tuple(overrides)))
    labels = [c.label for c in candidates]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ConfigError(f"candidate {repeated[0]!r} is given twice: pass each candidate once")
    return candidates


def compose_candidate(candidate: Candidate, shared: list[str]) -> DictConfig:
    """The train config of `shared` + the candidate's overrides, checked against the config's ranges."""
    from hydra import compose, initialize_config_dir

    register_resolvers()
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("train", overrides=[*shared, *candidate.overrides])
    except Exception as e:  # Hydra's own errors are the user's input; anything else stays a bug
        error = composition_error(e)
        if error is None:
            raise
        raise ConfigError(f"candidate {candidate.label!r} does not compose: {error}") from e
    try:
        check_config(cfg)
    except Exception as e:
        error = user_error(e)
        if error is e and not isinstance(e, ConfigError):
            raise
        raise ConfigError(f"candidate {candidate.label!r}: {error}") from e
    return cfg
