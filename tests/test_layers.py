"""The package's imports point one way: down the layer order below, and never in a circle.

Every ``import`` statement of every module counts, also those inside functions and under
``TYPE_CHECKING``: a lazy import is still a dependency. A module may import its own unit (a
top-level module or sub-package of ``contrastkit``) and any unit of a lower layer; units of
the same layer know nothing of each other. A new top-level unit must be placed in LAYERS.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "contrastkit"

# Lowest first. docs/design.md explains the order.
LAYERS: list[tuple[str, ...]] = [
    ("registry", "encoded", "hashing", "invocation"),  # the batch contract, name -> factory, hashes, argv
    ("config_schema",),  # the recipe's sections and defaults
    ("config",),  # typed recipes; validates its own keys only
    ("data",),  # sources, the shapes world, transforms, batches
    ("models",),  # towers, DualEncoder, checkpoints, loading, embedders
    ("distributed",),  # ranks and the one gather with gradient
    ("objectives",),  # loss terms: pure functions of Encoded
    ("evaluate",),  # tasks, the one orchestrator, the report
    ("engine",),  # prepare run -> step -> after step -> finish
    ("adapt", "export", "serve"),  # using trained models: adaptation, export for other tools, search
    ("commands",),  # one module per sub-command
    ("cli", "__init__", "__main__"),  # the command line and the package's face
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports anywhere in its code."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a package module -> the longest known prefix
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_graph(root: Path) -> dict[str, set[str]]:
    files = sorted(root.rglob("*.py"))
    known = {module_name(f, root) for f in files}
    return {module_name(f, root): imported_modules(f, root, known) for f in files}


def unit_of(module: str, top: str) -> str:
    rest = module[len(top) + 1 :] if module != top else "__init__"
    return rest.split(".")[0]


def upward_imports(graph: dict[str, set[str]], top: str) -> list[str]:
    problems = []
    for module, targets in sorted(graph.items()):
        unit = unit_of(module, top)
        if unit not in LAYER_OF:
            problems.append(f"{module}: unit {unit!r} is not in LAYERS (tests/test_layers.py); place it in the order")
            continue
        for target in sorted(targets):
            other = unit_of(target, top)
            if other == unit:
                continue
            if other not in LAYER_OF or LAYER_OF[other] >= LAYER_OF[unit]:
                problems.append(f"{module} imports {target}: {other} is not below {unit} in the layer order")
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
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

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_module_imports_upward_across_the_layer_order():
    problems = upward_imports(import_graph(PACKAGE), "contrastkit")
    assert not problems, "imports against the layer order:\n  " + "\n  ".join(problems)


def test_no_import_cycles():
    found = cycles(import_graph(PACKAGE))
    assert not found, "import cycles:\n  " + "\n  ".join(" <-> ".join(c) for c in found)


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path):
    root = tmp_path / "contrastkit"
    for rel, text in {
        "__init__.py": "",
        "encoded.py": "",
        "config.py": "",
        "data/__init__.py": "",
        "data/a.py": "from . import b\n",
        "data/b.py": "def f():\n    from .a import x\n",  # a lazy import closes the circle
        "models/__init__.py": "",
        "models/m.py": "from ..encoded import X\nfrom ..config import Y\n",  # allowed: both below
        "objectives/__init__.py": "",
        "objectives/t.py": "from ..encoded import E\n",
        "evaluate/__init__.py": "",
        "evaluate/e.py": "from ..models.m import M\n",
        "config_user.py": "",
    }.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "models" / "bad.py").write_text("from ..evaluate import e\n")
    (root / "config_user.py").unlink()
    graph = import_graph(root)
    assert graph["contrastkit.data.a"] == {"contrastkit.data.b"}
    assert graph["contrastkit.models.bad"] == {"contrastkit.evaluate.e"}
    problems = upward_imports(graph, "contrastkit")
    assert problems == [
        "contrastkit.models.bad imports contrastkit.evaluate.e: evaluate is not below models in the layer order"
    ]
    assert cycles(graph) == [["contrastkit.data.a", "contrastkit.data.b"]]
