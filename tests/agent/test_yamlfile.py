"""The one bounded YAML reader: hostile files get a message naming file, line and limit.

Unit cases call ``read_yaml`` directly; the CLI cases run both programs as a user would,
in a subprocess whose peak memory (``wait4`` rusage) is checked: a 300-byte "billion
laughs" file must not cost more than a normal start, and must end in exit 2, not in
MemoryError or a RecursionError traceback.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.configerror import ConfigError, clip, show
from agent.yamlfile import MAX_DEPTH, MAX_NODES, parse_yaml, read_yaml

REPO = Path(__file__).resolve().parents[2]
DEMO_ORG = REPO / "configs" / "org.demo.yaml"
PLAN = REPO / "configs" / "targets" / "bac-kan-2012.yaml"

# Nine levels of nine: 9**9 (387 million) strings once expanded, about 300 bytes on disk.
LAUGHS = (
    '[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"], '
    + ", ".join(
        f"&{name} [{', '.join([f'*{prev}'] * 9)}]"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    )
    + "]"
)
DEEP = "[" * 1200 + "]" * 1200
# A generous bound for a Python process that loads the collector: the bombs used > 1 GiB.
PEAK_RSS_MAX = 200 * 2**20


def _read(tmp_path: Path, text: str, **limits: int) -> ConfigError:
    path = tmp_path / "file.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        read_yaml(path, **limits)
    assert info.value.file == str(path)
    return info.value


def test_billion_laughs_is_refused_while_composing(tmp_path: Path) -> None:
    error = _read(tmp_path, f"site: a\nbomb: {LAUGHS}\n")
    assert error.message == (
        f"line 2, column 232: more than {MAX_NODES} values with aliases expanded "
        "(the limit; an alias bomb?)"
    )


def test_merge_keys_are_counted_like_aliases(tmp_path: Path) -> None:
    lines = ["a0: &a0 {" + ", ".join(f"k{i}: x" for i in range(10)) + "}"]
    for level in range(1, 8):
        sources = ", ".join(f"*a{level - 1}" for _ in range(10))
        lines.append(f"a{level}: &a{level} {{<<: [{sources}], own{level}: [{sources}]}}")
    error = _read(tmp_path, "\n".join(lines) + "\n")
    assert "values with aliases expanded (the limit" in error.message


def test_repeated_long_text_is_bounded(tmp_path: Path) -> None:
    """Aliases to one long string: few values, but gigabytes of text if concatenated."""
    text = "a: &t " + "x" * 100_000 + "\nb: [" + ", ".join(["*t"] * 50) + "]\n"
    error = _read(tmp_path, text)
    assert error.message.startswith("line 2, column 4: more than ")
    assert error.message.endswith(" characters of text with aliases expanded (the limit)")


def test_small_files_may_use_aliases(tmp_path: Path) -> None:
    path = tmp_path / "file.yaml"
    path.write_text("base: &b {timeout: 2s}\nlan: [*b, *b]\n", encoding="utf-8")
    assert read_yaml(path) == {"base": {"timeout": "2s"}, "lan": [{"timeout": "2s"}] * 2}


def test_deep_nesting_is_refused_before_the_stack_overflows(tmp_path: Path) -> None:
    error = _read(tmp_path, f"site: {DEEP}\n")
    assert error.message == (
        f"line 1, column {6 + MAX_DEPTH}: nested deeper than {MAX_DEPTH} levels (the limit)"
    )


def test_nesting_through_aliases_is_refused(tmp_path: Path) -> None:
    half = MAX_DEPTH // 2 + 2
    text = f"a: &d {'[' * half}x{']' * half}\nb: {'[' * half}*d{']' * half}\n"
    error = _read(tmp_path, text)
    assert error.message.endswith(
        f"nested deeper than {MAX_DEPTH} levels with aliases expanded (the limit)"
    )


def test_recursive_alias_is_refused(tmp_path: Path) -> None:
    error = _read(tmp_path, "a: &loop [x, *loop]\n")
    assert error.message == (
        "line 1, column 14: alias *loop refers to a list or mapping that contains it "
        "(recursive structures are not allowed)"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "n: " + "1" * 5000 + "\n",
            "line 1, column 4: cannot read the value '1111111111111111111111111111111111111"
            "11111111111111111111...': Exceeds the limit (4300 digits) for integer string "
            "conversion: value has 5000 digits; use sys.set_int_max_str_digits() to increase "
            "the limit",
            id="5000-digit-number",
        ),
        pytest.param(
            "day: 2024-13-45\n",
            "line 1, column 6: cannot read the value '2024-13-45': month must be in 1..12",
            id="impossible-date",
        ),
    ],
)
def test_values_python_cannot_build_name_their_line(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _read(tmp_path, text).message == expected


def test_limits_are_per_call(tmp_path: Path) -> None:
    error = _read(tmp_path, "a: [1, 2, 3, 4]\n", max_nodes=4)
    assert error.message == (
        "line 1, column 4: more than 4 values with aliases expanded (the limit; an alias bomb?)"
    )
    assert _read(tmp_path, "a: [[[1]]]\n", max_depth=3).message.startswith(
        "line 1, column 6: nested deeper than 3 levels"
    )


def test_parse_yaml_bounds_text_received_otherwise() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml(f"x: {LAUGHS}", name="central config")
    assert str(info.value) == (
        f"central config: line 1, column 229: more than {MAX_NODES} values with aliases "
        "expanded (the limit; an alias bomb?)"
    )


def test_the_old_import_path_still_works() -> None:
    import agent.config

    assert agent.config.read_yaml is read_yaml
    assert agent.config.ConfigError is ConfigError


# --- quoting raw values in errors ------------------------------------------------------


def test_show_cuts_and_escapes() -> None:
    huge = "x" * 10_000_000
    assert show(huge) == "'" + "x" * 57 + "...'"
    assert show("a\x1b[31mred\u202e") == "'a\\x1b[31mred\\u202e'"
    assert show(["a"] * 10**6) == "a list"
    assert show({"a": 1}) == "a mapping"
    assert show(None) == "null" and show(True) == "true" and show(2.5) == "2.5"
    assert show(b"\x00" * 100) == "binary data"
    assert show("dịch vụ công") == "'dịch vụ công'"
    assert show("officals", bare=True) == "officals"
    assert show("new\nline", bare=True) == "'new\\nline'"
    assert clip("abcdef", 5) == "ab..."


def test_config_error_bounds_its_parts() -> None:
    error = ConfigError("f.yaml", "k" * 10_000, "m" * 10_000_000)
    assert len(str(error)) < 1500


HUGE = "x" * 10_000_000


def _agent(data: Any) -> None:
    from agent.config import parse_config

    parse_config(data, "agent.yaml")


def _collector(data: Any) -> None:
    from collector.config import parse_config

    parse_config(data, "collector.yaml")


def _org(data: Any) -> None:
    from collector.org import parse_org

    parse_org(data, "org.yaml")


def _plan(data: Any) -> None:
    from collector.targets import parse_plan

    parse_plan(data, "plan.yaml")


UNIT = {"id": "demo", "name": "Demo", "level": "province"}
GOAL = {"indicator": "lan", "level": "commune", "goal": 1, "deadline": 2015}
PLAN_TOP = {"plan": "p", "title": "t", "reference": "r"}


@pytest.mark.parametrize(
    ("load", "data"),
    [
        pytest.param(_agent, {"site": HUGE}, id="agent-site"),
        pytest.param(_agent, {"site": "a", HUGE: 1}, id="agent-unknown-key"),
        pytest.param(_agent, {"site": "a", "interval": HUGE}, id="agent-duration"),
        pytest.param(_agent, {"site": "a", "spool": {"max_size": HUGE}}, id="agent-size"),
        pytest.param(
            _agent, {"site": "a", "collector": {"url": HUGE, "token": "t"}}, id="agent-url"
        ),
        pytest.param(_collector, {"org": "o", "store": {"url": HUGE}}, id="collector-store"),
        pytest.param(_collector, {"org": "o", HUGE: 1}, id="collector-unknown-key"),
        pytest.param(
            _collector, {"org": "o", "reporting": {"timezone": HUGE}}, id="collector-timezone"
        ),
        pytest.param(_org, {"province": HUGE, "units": [UNIT]}, id="org-province"),
        pytest.param(_org, {"province": "demo", "units": [{**UNIT, HUGE: 1}]}, id="org-key"),
        pytest.param(
            _org, {"province": "demo", "units": [{**UNIT, "level": HUGE}]}, id="org-level"
        ),
        pytest.param(
            _org,
            {
                "province": "demo",
                "units": [UNIT, {**UNIT, "id": "demo/a", "level": "agency", "parent": HUGE}],
            },
            id="org-parent",
        ),
        pytest.param(_plan, {**PLAN_TOP, "plan": HUGE, "goals": []}, id="plan-id"),
        pytest.param(
            _plan, {**PLAN_TOP, "goals": [{**GOAL, "indicator": HUGE}]}, id="plan-indicator"
        ),
        pytest.param(_plan, {**PLAN_TOP, "goals": [{**GOAL, "goal": HUGE}]}, id="plan-goal"),
        pytest.param(_plan, {**PLAN_TOP, "goals": [{**GOAL, "note": HUGE}]}, id="plan-note"),
    ],
)
def test_a_10mb_value_is_cut_in_the_message(load: Callable[[Any], None], data: Any) -> None:
    with pytest.raises(ConfigError) as info:
        load(data)
    message = str(info.value)
    assert len(message) < 400, message[:400]


# --- the programs, as a user runs them ------------------------------------------------


def _run(tmp_path: Path, *args: str) -> tuple[int, str, int]:
    """Run a hatang program; return (exit code, stderr, peak RSS in bytes)."""
    stderr = tmp_path / "stderr.txt"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            # Before the fix these files grew past 1 GiB: fail fast, not the machine.
            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (2**31, 2**31)),
        )
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            if proc.returncode is None and proc.poll() is None:
                proc.kill()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, stderr.read_text(encoding="utf-8"), usage.ru_maxrss * 1024


def _collector_config(tmp_path: Path, org: Path = DEMO_ORG, targets: Path = PLAN) -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(
        f"org: {org}\ntargets: [{targets}]\nstore: {{url: 'sqlite:collector.db'}}\n"
        "listen: {host: 127.0.0.1, port: 0}\n",
        encoding="utf-8",
    )
    return path


@pytest.mark.parametrize("where", ["agent", "collector", "org", "targets"])
@pytest.mark.parametrize("bomb", ["laughs", "deep"])
def test_hostile_file_exits_2_with_bounded_memory(tmp_path: Path, where: str, bomb: str) -> None:
    hostile = tmp_path / f"{where}.yaml"
    value = LAUGHS if bomb == "laughs" else DEEP
    limit = f"more than {MAX_NODES}" if bomb == "laughs" else f"deeper than {MAX_DEPTH}"
    if where == "org":
        hostile.write_text(f"province: {value}\nunits: []\n", encoding="utf-8")
        limit = "more than 1000000" if bomb == "laughs" else limit
    elif where == "targets":
        text = f"plan: {value}\ntitle: t\nreference: r\ngoals: []\n"
        hostile.write_text(text, encoding="utf-8")
    else:
        key = "site" if where == "agent" else "org"
        hostile.write_text(f"{key}: {value}\n", encoding="utf-8")
    if where == "agent":
        args = ["-m", "agent", "check", "--config", str(hostile)]
    else:
        config = hostile
        if where == "org":
            config = _collector_config(tmp_path, org=hostile)
        elif where == "targets":
            config = _collector_config(tmp_path, targets=hostile)
        args = ["-m", "collector", "serve", "--config", str(config)]
    code, stderr, peak = _run(tmp_path, *args)
    assert code == 2, stderr
    assert "Traceback" not in stderr
    assert hostile.name in stderr and limit in stderr, stderr
    assert len(stderr) < 1000
    assert peak < PEAK_RSS_MAX, f"peak RSS {peak / 2**20:.0f} MiB"


def _slow(text: str) -> Any:
    """What the bounded (pure Python) loader reads: the reference for libyaml's path."""
    from agent import yamlfile

    limits = yamlfile._Limits(MAX_NODES, 4 * max(len(text), 1 << 20), MAX_DEPTH)
    loader = yamlfile._BoundedLoader(text, limits)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


@pytest.mark.parametrize(
    "path",
    sorted(
        p
        for top in ("agent", "collector", "configs", "tests")
        for p in (REPO / top).rglob("*.yaml")
    ),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_libyaml_reads_every_shipped_file_as_the_bounded_loader_does(path: Path) -> None:
    """The fast path (libyaml) is taken for the project's own files and gives the same data;
    the broken examples fall back to the bounded loader, whose message users get."""
    from agent import yamlfile

    text = path.read_text(encoding="utf-8-sig")
    limits = yamlfile._Limits(MAX_NODES, 4 * max(len(text), 1 << 20), MAX_DEPTH)
    done, data = yamlfile._fast_data(text, limits)
    try:
        expected = _slow(text)
    except yaml.YAMLError:  # the broken examples: the bounded loader alone words the error
        assert not done
        return
    assert done, f"{path} fell back to the bounded loader"
    assert data == expected


def test_anchors_merge_keys_and_limits_agree_between_the_two_readers() -> None:
    """Aliases within the limits read the same; just past a limit the fast
    path steps aside and the bounded loader's message is the one users get."""
    from agent import yamlfile

    text = "base: &b {x: 1, y: [a, b]}\nuse: {z: *b}\nlist: &l [1, 2]\nagain: *l\n"
    limits = yamlfile._Limits(MAX_NODES, 1 << 22, MAX_DEPTH)
    assert yamlfile._fast_data(text, limits) == (True, _slow(text))
    nested = "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    assert yamlfile._fast_data(nested, limits)[0] is False
    with pytest.raises(ConfigError, match="nested deeper than"):
        parse_yaml(nested, name="n.yaml")
    for hostile in (f"site: a\nbomb: {LAUGHS}\n", DEEP, "a: *nowhere\n", "a: 1\na: 2\n"):
        assert yamlfile._fast_data(hostile, limits)[0] is False


def test_without_libyaml_the_bounded_loader_reads_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent import yamlfile

    monkeypatch.setattr(yamlfile, "_CSafeLoader", None)
    assert parse_yaml("site: a\nlist: [1, 2]\n", name="x.yaml") == {"site": "a", "list": [1, 2]}
