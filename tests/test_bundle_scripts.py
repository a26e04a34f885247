"""The bundles' install scripts, checked without running them.

PowerShell cannot be installed here (it is not a Debian package), so the .ps1 scripts
are parsed with tree-sitter's PowerShell grammar: a syntax error (an unclosed brace or
string, a broken ``param`` block) shows as an ERROR or MISSING node with its line. The
shell scripts go through ``bash -n``. What the scripts do is tested by
tests/test_bundles.py (Linux for real; Windows only up to what pip resolves).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import tree_sitter_powershell
from tree_sitter import Language, Node, Parser

REPO = Path(__file__).resolve().parents[1]
WINDOWS = REPO / "scripts/bundle/windows"
POWERSHELL = Parser(Language(tree_sitter_powershell.language()))


def syntax_errors(source: bytes) -> list[str]:
    """``line N: <text>`` for every ERROR or MISSING node of a PowerShell script."""
    found: list[str] = []

    def walk(node: Node) -> None:
        if node.is_error or node.is_missing:
            text = (node.text or b"").decode("utf-8", "replace").splitlines()
            found.append(f"line {node.start_point[0] + 1}: {text[0] if text else node.type}")
            return
        for child in node.children:
            walk(child)

    walk(POWERSHELL.parse(source).root_node)
    return found


@pytest.mark.parametrize("name", ["install.ps1", "uninstall.ps1"])
def test_powershell_scripts_parse_and_are_strict(name: str) -> None:
    source = (WINDOWS / name).read_bytes()
    assert syntax_errors(source) == []
    text = source.decode("utf-8")
    assert "Set-StrictMode -Version Latest" in text
    assert "$ErrorActionPreference = 'Stop'" in text


def test_the_powershell_check_sees_a_broken_script() -> None:
    source = (WINDOWS / "install.ps1").read_bytes()
    broken = source.replace(b"function Test-Admin {", b"function Test-Admin {{", 1)
    assert broken != source
    assert syntax_errors(broken)


def test_documented_install_parameters_exist() -> None:
    """The guide and README name these parameters; the param block must declare them."""
    text = (WINDOWS / "install.ps1").read_text(encoding="utf-8")
    block = text[text.index("param(") : text.index(")\nSet-StrictMode")]
    for name in ("CollectorUrl", "Code", "Role", "CaFile", "ConfigFile", "InstallDir", "Python"):
        assert f"[string]${name}" in block, name
    assert "[switch]$NoCheck" in block
    guide = (REPO / "docs/install.md").read_text(encoding="utf-8")
    for used in ("-CollectorUrl", "-Code", "-Role site-probe", "-CaFile", "-ConfigFile"):
        assert used in guide, used


@pytest.mark.parametrize(
    "script",
    [
        "scripts/bundle/linux/install.sh",
        "scripts/bundle/linux/uninstall.sh",
        "scripts/build-bundles.sh",
    ],
)
def test_shell_scripts_parse(script: str) -> None:
    proc = subprocess.run(["bash", "-n", str(REPO / script)], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (0, "")
