"""`transferlab export <ckpt | run dir> --format onnx|timm|hf|torchscript --out DIR`.

One module per format, registered in formats.py; each writes its files and checks them against the
trained network on real inputs. This package assembles the rest: the sidecar, the model card, and
the rule that a failed export leaves nothing half-written.
"""

from transferlab.export.run import ExportResult, export_run

__all__ = ["ExportResult", "export_run"]
