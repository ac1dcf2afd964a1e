"""Fine-tuning strategies, one module each, registered by name (see base.py)."""

import importlib
import pkgutil

from transferlab.finetune.strategies.base import STRATEGIES, ClassicalStrategy, Strategy, StrategyConfig, build_strategy, register

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "base":
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["STRATEGIES", "ClassicalStrategy", "Strategy", "StrategyConfig", "build_strategy", "register"]
