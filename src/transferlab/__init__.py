"""transferlab: transfer-learning experiments with Lightning + Hydra."""

from pathlib import Path

__version__ = "0.1.0"

# The configs live beside src/ in this template repository (installed editable).
CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
