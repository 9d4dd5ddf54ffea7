"""Small modules and short functions: no file of src/ over 400 lines, no function over 80.

A module may exceed a limit when its docstring says why in a line that starts with
``Size:`` (e.g. "Size: the tiled losses keep forward and backward of a tile side by side").
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "contrastkit"
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80


def size_reason(tree: ast.Module) -> str | None:
    doc = ast.get_docstring(tree) or ""
    return next((line for line in doc.splitlines() if line.startswith("Size:")), None)


def oversized(root: Path) -> list[str]:
    problems = []
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        if size_reason(tree):
            continue
        lines = len(text.splitlines())
        if lines > MAX_FILE_LINES:
            problems.append(f"{path.relative_to(root.parent)}: {lines} lines (> {MAX_FILE_LINES})")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    problems.append(
                        f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {length} lines "
                        f"(> {MAX_FUNCTION_LINES})"
                    )
    return problems


def test_files_and_functions_are_small_or_say_why():
    problems = oversized(SRC)
    assert not problems, "split these, or give the module docstring a 'Size:' line saying why:\n  " + "\n  ".join(
        problems
    )


def test_the_check_sees_a_long_function_and_a_stated_reason(tmp_path):
    root = tmp_path / "pkg"
    root.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(85))
    (root / "long.py").write_text(f'"""A module."""\n\n\ndef f():\n{body}\n')
    (root / "ok.py").write_text(f'"""A module.\n\nSize: one table kept whole.\n"""\n\n\ndef f():\n{body}\n')
    assert oversized(root) == ["pkg/long.py:4 f: 86 lines (> 80)"]
