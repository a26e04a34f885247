"""The province is built once per test session and shared by the truth and fault tests.

Truth tests run first (they need an undisturbed province); the faults follow in the
order of ``FAULT_ORDER``, each restoring links and processes when it ends. The workdir
(configs, logs, databases) is kept under pytest's tmp dir for post-mortems, and what
each fault showed is written to ``observations.json`` there (and to the file named by
``HATANG_E2E_OBSERVATIONS``, if set).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.province import Province, missing_tools, province_in_a_box

ORDER = ("test_truth.py", "test_faults.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Truth before faults, whatever the command line order."""

    slots = [i for i, item in enumerate(items) if item.path.name in ORDER]
    ours = sorted((items[i] for i in slots), key=lambda item: ORDER.index(item.path.name))
    for i, item in zip(slots, ours, strict=True):
        items[i] = item


@pytest.fixture(scope="session")
def province(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Province]:
    """The running province: namespaces, collector, every agent; torn down at the end."""
    reason = missing_tools()
    if reason:
        pytest.skip(reason)
    workdir = tmp_path_factory.mktemp("province")
    with province_in_a_box(workdir) as built:
        yield built
        text = json.dumps(built.observations, indent=2, default=str)
        (workdir / "observations.json").write_text(text, encoding="utf-8")
        extra = os.environ.get("HATANG_E2E_OBSERVATIONS")  # e.g. to refresh docs/e2e.md
        if extra:
            Path(extra).write_text(text, encoding="utf-8")
