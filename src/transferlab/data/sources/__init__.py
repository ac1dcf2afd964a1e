"""Data sources, one module each, registered by name (see registry.py)."""

import importlib
import pkgutil

from transferlab.data.sources.registry import ROOT_KEY, SourceContext, load_source, register, source_names

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ROOT_KEY", "SourceContext", "load_source", "register", "source_names"]
