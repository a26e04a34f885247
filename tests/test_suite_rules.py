"""Rules about the suite itself, checked on its source.

The suite installs everything it imports (the ``test`` extra), so a failed import is a
bug to see, never a reason to skip: ``pytest.importorskip`` (or a ``find_spec`` guard)
would turn a broken project module into a quiet skip.
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _calls(name: str) -> list[str]:
    found = []
    for folder in ("tests", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call):
                    func = node.func
                    called = (
                        func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                    )
                    if called == name:
                        found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_test_skips_on_a_failed_import() -> None:
    assert _calls("importorskip") == []
    assert _calls("find_spec") == []
