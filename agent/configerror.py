"""Configuration errors that people read: ConfigError, bounded value quoting, and the
translation of msgspec validation errors into messages naming the key path.

Shared by every file hatang loads (agent and collector configs, org and targets files,
and the files that come after them). It imports only msgspec, never the probe modules,
so the collector can use it without loading the agent's probes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
import msgspec.inspect as mi

__all__ = ["ConfigError", "Wording", "clip", "humanise", "show"]

# Whatever a hostile file holds, a message stays a readable line or two.
SHOW_MAX: Final = 60
MESSAGE_MAX: Final = 1000
PATH_MAX: Final = 300


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, marked with ``...`` when cut."""
    return text if len(text) <= limit else text[: max(limit - 3, 0)] + "..."


def show(value: Any, limit: int = SHOW_MAX, *, bare: bool = False) -> str:
    """A raw value as the user wrote it in YAML, bounded and with control characters escaped.

    The one way to quote a value in an error: never ``repr()`` raw input, which may be
    megabytes long or, through YAML aliases, a structure far larger than the file.
    ``bare`` leaves printable text unquoted (a key named in a path or message).
    """
    if bare and isinstance(value, str) and value.isprintable():
        return clip(value, limit)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(clip(value, limit))  # repr escapes control and bidi characters
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple | set):
        return "a list"
    if isinstance(value, bytes | bytearray):
        return "binary data"
    if isinstance(value, int | float | dt.date):
        return clip(str(value), limit)
    return f"a {type(value).__name__}"


class ConfigError(Exception):
    """A configuration problem: the file, the key path and what is wrong."""

    def __init__(self, file: str, path: str, message: str) -> None:
        # Bounded here too: parts of a path or message may come from the file itself.
        self.file, self.path, self.message = file, clip(path, PATH_MAX), clip(message, MESSAGE_MAX)
        super().__init__(self.file, self.path, self.message)

    def __str__(self) -> str:
        where = [part for part in (self.file, self.path) if part]
        return ": ".join([*where, self.message])

    def in_file(self, file: str) -> ConfigError:
        """Name the config file when the error was raised without one (e.g. ``read_token``)."""
        if not self.file:
            self.file = file
        return self


@dataclass(frozen=True, slots=True)
class Wording:
    """What one schema's messages may say that the generic translation cannot know."""

    # key name -> how its values look, for regex constraints ("site": "is not a unit id ...")
    patterns: Mapping[str, str] = field(default_factory=dict)
    # tag field -> the noun for its values ("kind": "probe kind")
    tags: Mapping[str, str] = field(default_factory=dict)
    # list key -> how to write one item, added when an item is not a mapping
    item_examples: Mapping[str, str] = field(default_factory=dict)


_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.DOTALL)
_KEY_AT = re.compile(r"^(?P<msg>.*?) - at `key` in `\$(?P<path>[^`]*)`$", re.DOTALL)
_SEGMENT = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
# A __post_init__ error may name the key inside its struct: "subnets[1]: not a subnet".
_KEY_PREFIX = re.compile(
    r"^(?P<key>[a-z_][a-z0-9_]*)(?P<rest>(?:\[\d+\])*): (?P<msg>.+)$", re.DOTALL
)
_TYPE_WORDS: Final[dict[str, str]] = {
    "str": "a string",
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "null": "nothing (null)",
    "array": "a list",
    "object": "a mapping of keys",
    "date": "a date",
    "datetime": "a date and time",
    "bytes": "binary data (!!binary)",
}


def _words(types: str) -> str:
    names = [t.strip() for t in types.split("|")]
    if len(names) > 1 and "null" in names:  # "optional" needs no mention: the key can go
        names.remove("null")
    return " or ".join(_TYPE_WORDS.get(name, name) for name in names)


def _segments(path: str) -> list[str | int]:
    return [int(i) if i else key for key, i in _SEGMENT.findall(path)]


def _lookup(data: Any, segments: list[str | int]) -> Any:
    """The raw value at a path, or None when the path does not exist in the data."""
    for segment in segments:
        if isinstance(segment, int):
            data = data[segment] if isinstance(data, list) and segment < len(data) else None
        else:
            data = data.get(segment) if isinstance(data, dict) else None
    return data


def _resolve(info: Any, value: Any) -> Any:
    """Strip metadata and optionality; pick the tagged struct the raw value names."""
    while True:
        if isinstance(info, mi.Metadata):
            info = info.type
        elif isinstance(info, mi.UnionType):
            options = [t for t in info.types if not isinstance(t, mi.NoneType)]
            structs = [t for t in options if isinstance(t, mi.StructType)]
            tagged = [t for t in structs if t.tag_field is not None]
            if tagged and isinstance(value, dict):
                tag = value.get(tagged[0].tag_field)
                chosen = [t for t in tagged if t.tag == tag]
                if chosen:
                    return chosen[0]
            if len(options) == 1:
                info = options[0]
            elif len(structs) == 1 and isinstance(value, dict):
                return structs[0]
            else:
                return info
        else:
            return info


def _type_at(segments: list[str | int], data: Any, root: type[msgspec.Struct]) -> Any:
    """The msgspec type info expected at a path of the raw data (None if unknown)."""
    info: Any = mi.type_info(root)
    value = data
    for segment in segments:
        info = _resolve(info, value)
        if isinstance(segment, int) and isinstance(info, mi.ListType):
            info = info.item_type
        elif isinstance(segment, str) and isinstance(info, mi.StructType):
            fields = {f.encode_name: f.type for f in info.fields}
            if segment not in fields:
                return None
            info = fields[segment]
        else:
            return None
        value = _lookup(value, [segment])
    return _resolve(info, value)


def _tags(info: Any, tag_field: str) -> list[str]:
    """The tag values of a tagged union whose tag field is ``tag_field`` (else empty)."""
    if not isinstance(info, mi.UnionType):
        return []
    structs = [t for t in info.types if isinstance(t, mi.StructType)]
    return [str(t.tag) for t in structs if t.tag_field == tag_field and t.tag is not None]


def _known_keys(info: Any) -> list[str]:
    structs = [info] if isinstance(info, mi.StructType) else []
    if isinstance(info, mi.UnionType):
        structs = [t for t in info.types if isinstance(t, mi.StructType)]
    keys: list[str] = []
    for struct in structs:
        if struct.tag_field and struct.tag_field not in keys:
            keys.append(struct.tag_field)
        keys += [f.encode_name for f in struct.fields if f.encode_name not in keys]
    return keys


def _join(path: str, key: str) -> str:
    if not path or key.startswith("["):
        return f"{path}{key}"
    return f"{path}.{key}"


def _bounds(info: Any) -> str:
    """``from 1 to 100`` / ``>= 1`` for an IntType or FloatType."""
    low = f">= {info.ge}" if info.ge is not None else f"> {info.gt}" if info.gt is not None else ""
    high = f"<= {info.le}" if info.le is not None else f"< {info.lt}" if info.lt is not None else ""
    if info.ge is not None and info.le is not None:
        return f"from {info.ge} to {info.le}"
    return " and ".join(part for part in (low, high) if part)


def humanise(
    error: msgspec.ValidationError,
    data: Any,
    root: type[msgspec.Struct],
    wording: Wording | None = None,
) -> tuple[str, str]:
    """Turn msgspec's ``msg - at `$.a.b[1]``` into (``a.b[1]``, a message for people).

    ``data`` (the decoded YAML, or None) and ``root`` (the struct it was converted to)
    let the message quote the bad value, list allowed values and suggest the closest
    known key; without the data the message is plainer but still names the path.
    """
    words = wording or Wording()
    text = str(error)
    key_match = _KEY_AT.match(text)
    match = key_match or _AT.match(text)
    assert match is not None
    msg, path = match.group("msg"), (match.group("path") or "").lstrip(".")
    segments = _segments(path)
    known = data is not None  # without the data, never guess at values or types
    value = _lookup(data, segments)
    info = _type_at(segments, data, root) if known else None
    shown_value = show(value) if known else "the value"
    if key_match:
        bad = [k for k in value if not isinstance(k, str)] if isinstance(value, dict) else []
        return path, f"key {show(bad[0]) if bad else ''} is not text (quote it)"

    if m := re.match(r"Object contains unknown field `(.+)`", msg, re.DOTALL):
        import difflib  # only for a config with a mistake: not in every daemon's memory

        key, keys = m.group(1), _known_keys(info)
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.6) if len(key) < 100 else []
        if close:
            return path, f"unknown key {show(key)} (did you mean {close[0]!r}?)"
        if not keys:
            return path, f"unknown key {show(key)}"
        return path, f"unknown key {show(key)} (expected one of: {', '.join(keys)})"
    if m := re.match(r"Object missing required field `(.+)`", msg):
        key = m.group(1)
        if tags := _tags(info, key):
            return _join(path, key), f"required key is missing (one of {', '.join(tags)})"
        return _join(path, key), "required key is missing"
    if msg.startswith("Invalid value ") and segments and isinstance(segments[-1], str):
        parent = _type_at(segments[:-1], data, root) if known else None
        if tags := _tags(parent, segments[-1]):
            noun = words.tags.get(segments[-1], f"known {segments[-1]}")
            return path, f"{shown_value} is not a {noun} (expected one of {', '.join(tags)})"
    if msg.startswith("Invalid enum value") and isinstance(info, mi.LiteralType):
        choices = ", ".join(str(v) for v in info.values)
        return path, f"{show(value)} is not one of: {choices}"
    if m := re.match(r"Expected `(.+?)`, got `(.+?)`$", msg):
        expected, got = m.group(1), m.group(2)
        quiet = ("object", "array", "null", "bytes")
        shown = "" if got in quiet or not known else f" {show(value)}"
        got_words = "a boolean" if got == "bool" else _words(got)
        message = f"expected {_words(expected)}, got {got_words}{shown}"
        if got == "null":
            message = f"no value given (expected {_words(expected)})"
        elif "str" in expected and got == "bool":
            message += " (YAML reads yes/no/on/off as true/false: quote the text)"
        elif "str" in expected and got in ("int", "float", "date", "datetime"):
            message += " (quote the text)"
        list_key = segments[-2] if len(segments) >= 2 and isinstance(segments[-1], int) else None
        if expected == "object" and isinstance(list_key, str) and list_key in words.item_examples:
            message += f"; {words.item_examples[list_key]}"
        return path, message
    if m := re.match(r"Expected `str` matching regex '(.+)'$", msg):
        last = segments[-1] if segments else ""
        hint = words.patterns.get(str(last), f"does not have the expected form ({m.group(1)})")
        return path, f"{shown_value} {hint}"
    if m := re.match(r"Expected `(str|array|object)` of length ([<>]=) (\d+)$", msg):
        kind, op, limit = m.group(1), m.group(2), int(m.group(3))
        if op == ">=" and limit == 1:
            return path, "must not be empty"
        count = len(value) if isinstance(value, str | list | dict) else None
        bound = "at least" if op == ">=" else "at most"
        if kind == "str":
            amount = "too short" if op == ">=" else "too long"
            size = f": {count} characters" if count is not None else ""
        else:
            amount = "too few items" if op == ">=" else "too many items"
            size = f": {count}" if count is not None else ""
        return path, f"{amount}{size} ({bound} {limit})"
    if re.match(r"Expected `(int|float)` [<>]=? ", msg) and isinstance(
        info, mi.IntType | mi.FloatType
    ):
        word = "an integer" if isinstance(info, mi.IntType) else "a number"
        return path, f"{show(value)} is out of range (expected {word} {_bounds(info)})"
    if (m := _KEY_PREFIX.match(msg)) and (not known or m.group("key") in _known_keys(info)):
        return _join(path, m.group("key") + m.group("rest")), m.group("msg")
    if isinstance(info, mi.StructType) and info.tag_field is not None and isinstance(value, dict):
        # A tagged struct's own validation may not name the key: the quoted value tells
        # which one (dns: address or query); otherwise it is the address, the one key
        # every probe kind checks.
        for key, item in value.items():
            if key in (info.tag_field, "name") or not isinstance(item, str):
                continue
            if repr(item) in msg or show(item) in msg:
                return _join(path, str(key)), msg
        return _join(path, "address"), msg
    return path, msg
