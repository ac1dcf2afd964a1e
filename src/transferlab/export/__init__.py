"""`transferlab export <ckpt | run dir> --format onnx|timm|hf|torchscript --out DIR`.

One module per format (`<name>_format.py`, registered in formats.py); each writes its files and
checks them against the trained network on real inputs. The package imports every format module
in it, so a new file is a new `--format` choice. It assembles the rest: the sidecar, the model
card, and the rule that a failed export leaves nothing half-written.
"""

import importlib
import pkgutil

from transferlab.export.run import ExportResult, export_run

for _module in pkgutil.iter_modules(__path__):
    if _module.name.endswith("_format"):
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["ExportResult", "export_run"]
