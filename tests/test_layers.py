"""Imports run one way: a layer never imports a layer above it, and no modules import each other in
a circle inside a layer (docs/architecture.md).

Read from the source (every import, also those inside functions), so a backwards import fails here
before it becomes an import cycle somewhere else, and a circle cannot hide behind an import moved
into a function.
"""

import ast
import sys
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
    "tune": BASE | {"finetune", "report"},
    "report": BASE,
    # Entry points.
    "train": BASE | {"data", "models", "finetune", "engine"},
    "eval": BASE | {"data", "models", "finetune", "engine", "inference"},
    "predict": BASE | {"data", "inference", "engine"},
    # Ranks backbones by their frozen features, as a run builds them; reads records, not the report.
    "ranking": BASE | {"data", "models", "finetune", "engine"},
    # Re-runs published records through train.py in a subprocess: it imports records, not the stack.
    "reproduce": BASE,
    "cli": BASE | {"report", "export", "ranking", "reproduce"},
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


# --- circles between modules -----------------------------------------------------------------------
def module_name(path: Path) -> str:
    parts = ("transferlab", *path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runs(node: ast.AST) -> bool:
    """False for an `if TYPE_CHECKING:` block: what it imports is never imported when the code runs."""
    test = getattr(node, "test", None)
    return not (isinstance(node, ast.If) and (getattr(test, "id", None) == "TYPE_CHECKING" or getattr(test, "attr", None) == "TYPE_CHECKING"))


def _imports(node: ast.AST):
    """Every import statement below `node` that runs, at module level or inside functions."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        if _runs(child):
            yield from _imports(child)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The transferlab modules that `path` imports: `from a import b` is module a.b where that is a
    module, else a itself."""
    found = set()
    for node in _imports(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "transferlab":
            for alias in node.names:
                found.add(f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "transferlab"}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sorted(SRC.rglob("*.py"))}
    modules = set(paths)
    return {name: imported_modules(path, modules) - {name} for name, path in paths.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10 * len(graph)))
    try:
        for v in sorted(graph):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return sorted(found)


def test_no_modules_import_each_other_in_a_circle():
    found = circles(import_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_circle_finder_finds_a_circle_and_only_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []
