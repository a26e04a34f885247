"""Checks shared by the collector's hand-validated YAML files (org, targets, and the files
after them): unknown keys, text fields and choices, each error naming file, place and key.

Where an error points: ``at`` is the place of the mapping (``goals[0]``, or a labelled
place such as ``units[1] (bac-kan/ba-be)``) and the key is joined to it
(``goals[0].note``); after a label the key leads the message instead
(``units[1] (bac-kan/ba-be): kind: must be non-empty text``), so the label stays next to
the place it names. Raw values are quoted only through ``agent.configerror.show``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

from agent.configerror import ConfigError, show
from agent.yamlfile import MAX_NODES, read_yaml

TEXT_MAX: Final = 4096
_S = TypeVar("_S", bound=str)


def load_yaml(
    path: str | Path,
    error: type[ConfigError],
    *,
    empty_hint: str,
    max_bytes: int,
    max_nodes: int = MAX_NODES,
) -> tuple[Any, str]:
    """Read one of these files with the bounded reader; return (data, the file's name).

    Errors are raised as the file's own ``error`` and name the file by its base name, as
    the messages about its content do.
    """
    file = Path(path).name
    try:
        data = read_yaml(path, empty_hint=empty_hint, max_bytes=max_bytes, max_nodes=max_nodes)
    except ConfigError as exc:
        raise error(file, exc.path, exc.message) from None
    return data, file


class Fields:
    """The checks for one file; every failure raises ``error(file, path, message)``."""

    def __init__(self, error: type[ConfigError], file: str) -> None:
        self.error, self.file = error, file

    def fail(self, at: str, key: str | None, message: str) -> NoReturn:
        """Raise this file's error for ``key`` (None: the mapping itself) at ``at``."""
        if key is None:
            raise self.error(self.file, at, message)
        if at.endswith(")"):
            raise self.error(self.file, at, f"{key}: {message}")
        raise self.error(self.file, f"{at}.{key}" if at else key, message)

    def reject_unknown(self, data: Mapping[Any, Any], allowed: Iterable[str], at: str) -> None:
        """Refuse keys outside ``allowed`` (a typo must not silently drop a value)."""
        allowed = frozenset(allowed)
        unknown = sorted(show(key, bare=True) for key in data if key not in allowed)
        if unknown:
            choices = ", ".join(sorted(allowed))
            self.fail(at, unknown[0], f"unknown key (allowed: {choices})")

    def optional_text(
        self, data: Mapping[str, Any], key: str, at: str, *, limit: int = TEXT_MAX
    ) -> str | None:
        """The stripped text at ``key``, or None when absent; blank or non-text is refused."""
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.fail(at, key, f"must be non-empty text, got {show(value)}")
        if len(value) > limit:
            self.fail(at, key, f"too long: {len(value)} characters (at most {limit})")
        return value.strip()

    def text(self, data: Mapping[str, Any], key: str, at: str, *, limit: int = TEXT_MAX) -> str:
        """Like ``optional_text``, but the key is required."""
        value = self.optional_text(data, key, at, limit=limit)
        if value is None:
            self.fail(at, key, "missing")
        return value

    def choice(self, value: Any, choices: Sequence[_S], at: str, key: str, what: str = "") -> _S:
        """``value`` when it is one of ``choices``; else name it and list the choices."""
        for option in choices:
            if isinstance(value, str) and value == option:
                return option
        noun = f"{what} " if what else ""
        self.fail(at, key, f"unknown {noun}{show(value)} (one of {', '.join(choices)})")
