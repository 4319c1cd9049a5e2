"""Static scan for SQL built from strings (f-strings, concatenation, str.format) in SQL calls.

Run as `python -m tests.sqlscan DIR...` (prints findings as JSON): the test runs it in a child
process because CPython 3.11's `ast.parse` keeps its recursion counter per interpreter, so a
traceback formatted on another thread at the same moment (3.11 parses source lines for its
carets) can fail it with "AST constructor recursion depth mismatch" (cpython gh-106905).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

_SQL_CALLS = {"execute", "executemany", "exec_driver_sql", "text", "copy", "SQL"}


def _dynamic_sql(node: ast.expr) -> str | None:
    """Why `node`, a first argument to an SQL call, is built at run time (None: a constant)."""
    if isinstance(node, ast.JoinedStr):
        return "an f-string"
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Mod):
        return "string concatenation or %-formatting"
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("format", "join", "replace")
        and not (isinstance(node.func.value, ast.Call) and _name(node.func.value) == "SQL")
    ):
        return f"str.{node.func.attr}()"
    return None


def _name(call_: ast.Call) -> str:
    f = call_.func
    return f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""


def _sql_findings(root: Path) -> list[str]:
    findings = []
    for path in sorted(root.rglob("*.py")):
        if "pb" in path.relative_to(root).parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        # Names assigned from dynamic strings anywhere in the module, then passed to execute().
        dynamic_names = {
            t.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Assign) and _dynamic_sql(n.value)
            for t in n.targets
            if isinstance(t, ast.Name)
        }
        for n in ast.walk(tree):
            if not (isinstance(n, ast.Call) and _name(n) in _SQL_CALLS and n.args):
                continue
            arg = n.args[0]
            why = _dynamic_sql(arg)
            if why is None and isinstance(arg, ast.Name) and arg.id in dynamic_names:
                why = f"{arg.id!r}, a string built at run time"
            if why:
                findings.append(
                    f"{path.relative_to(root.parent)}:{n.lineno}: {_name(n)}() of {why}"
                )
    return sorted(findings, key=lambda f: (f.split(":")[0], int(f.split(":")[1])))


if __name__ == "__main__":
    print(json.dumps([f for root in sys.argv[1:] for f in _sql_findings(Path(root))]))
