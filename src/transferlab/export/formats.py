"""The export formats by name. A format is a function (trained, network, out_dir, samples) ->
FormatOutput: the files it wrote and how it checked them against the network. The package imports
each `<name>_format.py` (export/__init__.py), and each registers itself here. Which formats fit a
run is the backbone kind's to say (`BackboneKind.export_formats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from transferlab.errors import ConfigError


@dataclass(frozen=True)
class ExportFormat:
    name: str
    write: Callable  # (trained, network, out_dir, samples) -> FormatOutput
    writes: str  # what it writes, for the messages that refuse it


@dataclass
class FormatOutput:
    files: dict[str, str]  # role -> file name inside the export folder
    verification: dict = field(default_factory=dict)
    usage: str = ""  # how to load it, for the model card (markdown)
    notes: list[str] = field(default_factory=list)


_FORMATS: dict[str, ExportFormat] = {}


def register_format(name: str, writes: str) -> Callable:
    def add(fn: Callable) -> Callable:
        _FORMATS[name] = ExportFormat(name, fn, writes)
        return fn

    return add


def format_names() -> list[str]:
    return sorted(_FORMATS)


def get_format(name: str) -> ExportFormat:
    if name not in _FORMATS:
        raise ConfigError(f"--format {name} is not an export format: use one of {', '.join(sorted(_FORMATS))}")
    return _FORMATS[name]

