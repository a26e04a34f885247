"""The collector shares the agent's wire format and config-error machinery, not its probes.

``agent.configerror`` (ConfigError, the msgspec error translation, ``show``) and
``agent.yamlfile`` (the bounded reader) are public homes that import no probe module;
the collector must use them, not ``agent.config`` and its private helpers (which
import every probe kind). Checked in a fresh interpreter, as the service starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

DRIVER = r"""
import importlib, json, pkgutil, sys
import collector
names = [m.name for m in pkgutil.walk_packages(collector.__path__, "collector.")]
for name in names:
    if name != "collector.__main__":  # runs the command line
        importlib.import_module(name)
agent = sorted(m for m in sys.modules if m.startswith("agent"))
print(json.dumps({"imported": names, "agent": agent}))
"""


def test_no_collector_module_imports_the_agent_probes_or_its_config() -> None:
    result = subprocess.run(
        [sys.executable, "-c", DRIVER], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert {"collector.config", "collector.org", "collector.targets"} <= set(outcome["imported"])
    loaded = outcome["agent"]
    assert [m for m in loaded if m.startswith("agent.probes")] == []
    assert "agent.config" not in loaded
    assert {"agent.configerror", "agent.yamlfile"} <= set(loaded)
