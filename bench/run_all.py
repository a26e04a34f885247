"""Run every benchmark and write the results table into docs/benchmarks.md.

Each benchmark runs as its own process (``python3 bench/<name>.py --json FILE``), one
after the other so that they do not disturb each other; the ARP sweep's own table is
parsed from its output. The table replaces the part of docs/benchmarks.md between the
``<!-- bench:begin -->`` and ``<!-- bench:end -->`` markers; the written analysis around
it is kept.

    python3 bench/run_all.py [--quick] [--only footprint,probes,...] [--no-doc]
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, Row, machine, need_root, parser, table

BENCH = Path(__file__).resolve().parent
DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
ORDER = ("footprint", "probes", "arp_sweep", "ingest", "scrape", "scale", "evidence")


def run_script(name: str, quick: bool) -> tuple[list[Row], list[str], str]:
    """Run one benchmark; (rows, notes, command)."""
    command = [sys.executable, str(BENCH / f"{name}.py")]
    if name == "arp_sweep":
        shown = "python3 bench/arp_sweep.py"
        proc = subprocess.run(command, capture_output=True, text=True, timeout=1800)
        if proc.returncode != 0:
            return [Row("LAN discovery", "ARP sweep", f"failed: {proc.stderr[-200:]}")], [], shown
        return arp_rows(proc.stdout), [], shown
    if quick:
        command.append("--quick")
    shown = " ".join(["python3", f"bench/{name}.py", *command[2:]])
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        proc = subprocess.run([*command, "--json", out.name], capture_output=True, text=True,
                              timeout=3600)  # fmt: skip
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or ["?"])[-1]
            return [Row(name, "run", f"failed: {reason}")], [], shown
        data = json.loads(Path(out.name).read_text(encoding="utf-8"))
    return [Row(**r) for r in data["rows"]], list(data["notes"]), shown


def arp_rows(text: str) -> list[Row]:
    """Rows from arp_sweep.py's table (process wall time; hosts found)."""
    found = re.findall(r"^\| (.+?) \| ([0-9.]+) \| ([0-9.]+)x \| (\S+) \| (\d+/\d+) \|$",
                       text, re.M)  # fmt: skip
    by_tool = {tool: (float(sec), sweep, hosts) for tool, sec, _, sweep, hosts in found}
    if "hatang" not in by_tool:
        return [Row("LAN discovery", "ARP sweep", "no result parsed")]
    sec, sweep, hosts = by_tool.pop("hatang")
    rows = []
    for tool, (ref, _, ref_hosts) in by_tool.items():
        rows.append(
            Row("LAN discovery", f"/24 with 60 live hosts, process wall s (sweep only {sweep})",
                f"{sec:.2f} ({hosts})", f"{tool} {ref:.2f} ({ref_hosts})", f"{sec / ref:.2f}x",
                "all found, faster", "met" if sec <= ref and hosts == ref_hosts else "MISSED")
        )  # fmt: skip
    return rows


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--only", help="comma-separated subset of " + ",".join(ORDER))
    p.add_argument("--no-doc", action="store_true", help="print only, leave the doc alone")
    args = p.parse_args()
    need_root()
    names = [n for n in ORDER if not args.only or n in args.only.split(",")]
    rows: list[Row] = []
    notes: list[str] = []
    commands: list[str] = []
    for name in names:
        began = time.monotonic()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        r, n, command = run_script(name, args.quick)
        rows += r
        notes += n
        if command != "-":
            commands.append(f"{command}  # {time.monotonic() - began:.0f} s")
    m = machine()
    section = "\n".join(
        [
            BEGIN,
            f"Measured {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC on {m['nproc']} CPUs "
            f"({m['cpu']}), {m['memory']} RAM, Linux {m['kernel']}, Python {m['python']}"
            f"{' — quick mode' if args.quick else ''}. Commands (as root, from the repository):",
            "",
            "```",
            *commands,
            "```",
            "",
            table(rows),
            "",
            *(f"- {note}" for note in notes),
            END,
        ]
    )
    print(section)
    if args.no_doc or args.json:
        return
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END) :]
    else:
        text += "\n" + section + "\n"
    DOC.write_text(text, encoding="utf-8")
    print(f"\nwritten to {DOC.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
