"""Imports run one way: a layer never imports a layer above it (docs/architecture.md).

Read from the source (every import, also those inside functions), so a backwards import fails here
before it becomes an import cycle somewhere else.
"""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "transferlab"

# Bottom to top. A layer may import the ones listed for it; "__init__" (CONFIG_DIR) is allowed everywhere.
BASE = {"errors", "config", "utils", "record", "run_dirs"}
ALLOWED = {
    "errors": set(),
    "config": {"errors"},
    "utils": {"errors"},
    "record": {"errors", "utils"},
    "run_dirs": {"errors", "utils", "record"},
    "data": BASE,
    "models": BASE | {"data"},
    "finetune": BASE | {"data", "models"},
    "engine": BASE | {"data", "models", "finetune"},
    # A finished run as a model to use, then written in other formats.
    "inference": BASE | {"data", "models", "finetune", "engine"},
    "export": BASE | {"data", "models", "finetune", "engine", "inference"},
    # Beside the training stack, reading what it wrote: never the stack itself.
    "sweep": BASE,
    "report": BASE,
    # Entry points.
    "train": BASE | {"data", "models", "finetune", "engine"},
    "eval": BASE | {"data", "models", "finetune", "engine", "inference"},
    "predict": BASE | {"data", "inference", "engine"},
    "cli": BASE | {"report", "export"},
}


def imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "transferlab":
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names if a.name.split(".")[0] == "transferlab"]
        else:
            continue
        for name in names:
            parts = name.split(".")
            found.add(parts[1] if len(parts) > 1 else "__init__")
    return found


def test_every_module_imports_only_layers_below_it():
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC)
        layer = rel.parts[0].removesuffix(".py")
        if layer == "__init__":
            continue
        assert layer in ALLOWED, f"{rel}: a new layer; place it in ALLOWED (and docs/architecture.md)"
        bad = imported_layers(path) - ALLOWED[layer] - {layer, "__init__"}
        wrong += [f"{rel} imports transferlab.{b}" for b in sorted(bad)]
    assert not wrong, "\n".join(wrong)
