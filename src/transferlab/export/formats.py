"""The export formats by name. A format is a function (trained, network, out_dir, samples) ->
FormatOutput: the files it wrote and how it checked them against the network."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from transferlab.errors import ConfigError

_FORMATS: dict[str, Callable] = {}


@dataclass
class FormatOutput:
    files: dict[str, str]  # role -> file name inside the export folder
    verification: dict = field(default_factory=dict)
    usage: str = ""  # how to load it, for the model card (markdown)
    notes: list[str] = field(default_factory=list)


def register_format(name: str) -> Callable:
    def add(fn: Callable) -> Callable:
        _FORMATS[name] = fn
        return fn

    return add


def format_names() -> list[str]:
    _load_all()
    return sorted(_FORMATS)


def get_format(name: str) -> Callable:
    _load_all()
    if name not in _FORMATS:
        raise ConfigError(f"--format {name} is not an export format: use one of {', '.join(sorted(_FORMATS))}")
    return _FORMATS[name]


def _load_all() -> None:
    from transferlab.export import hf_format, onnx_format, timm_format, torchscript_format  # noqa: F401  (they register)
