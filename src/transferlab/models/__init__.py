"""Backbones (one module per kind, `*_backbone.py`, registered by name), weights sources, heads."""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    if _module.name.endswith("_backbone"):
        importlib.import_module(f"{__name__}.{_module.name}")
