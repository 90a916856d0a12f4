"""The results table (stdout and Markdown), the machine description and the PNG chart."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path
from typing import Any, Optional, TextIO

from bench.model import PYSOCK, RAW, Row, Series

COLUMNS = ("case", "implementation", "median", "min-max", "pysock/raw", "goal", "met?")


def format_value(value: float, unit: str) -> str:
    """A number in the row's unit, compact and readable."""
    if value != value:  # NaN
        return "nan"
    if unit in ("lines/s", "records/s"):
        return f"{value / 1e6:.2f} M"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _goal_cells(row: Row, series: Series) -> tuple[str, str, str]:
    """(ratio, goal, met) cells: filled on the pysock line only."""
    if series.impl != PYSOCK:
        return "", "", ""
    if not series.available:
        return "", row.goal.text if row.goal else "", "n/a"
    ratio = row.ratio
    ratio_text = f"{ratio:.3f}" if ratio is not None else ""
    goal_text = ""
    if row.goal is not None:
        goal_text = row.goal.text
        if row.goal_value is not None:
            goal_text = f"{row.goal_label} {format_value(row.goal_value, '')} {row.goal.text}"
    met = row.met
    return ratio_text, goal_text, "" if met is None else ("yes" if met else "NO")


def table_lines(row: Row) -> list[tuple[str, ...]]:
    """The table's cells for one row: one line per implementation."""
    lines: list[tuple[str, ...]] = []
    for index, series in enumerate(row.series):
        case = f"{row.title} [{row.unit}, {row.better} is better]" if index == 0 else ""
        if series.available:
            median = format_value(series.median, row.unit)
            spread = (
                f"{format_value(series.low, row.unit)} - {format_value(series.high, row.unit)}"
            )
        else:
            median, spread = series.note or "n/a", ""
        lines.append((case, series.impl, median, spread, *_goal_cells(row, series)))
    return lines


def print_table(rows: list[Row], stream: TextIO = sys.stdout) -> None:
    """Print the table as aligned text."""
    body = [line for row in rows for line in table_lines(row)]
    widths = [max(len(COLUMNS[i]), *(len(line[i]) for line in body)) for i in range(1, 7)]
    print(file=stream)
    for row in rows:
        print(f"== {row.title} [{row.unit}, {row.better} is better]", file=stream)
        for line in table_lines(row):
            cells = [cell.ljust(width) for cell, width in zip(line[1:], widths)]
            print("   " + "  ".join(cells).rstrip(), file=stream)
        if row.note:
            print(f"   ({row.note})", file=stream)


def machine_description(pin_note: str) -> list[str]:
    """nproc, CPU model, Python, kernel: what the reader needs to weigh the numbers."""
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    uname = platform.uname()
    return [
        f"- CPUs (nproc): {os.cpu_count()}, model: {cpu}",
        f"- Python {platform.python_version()} ({platform.python_implementation()}), "
        f"kernel {uname.system} {uname.release} ({uname.machine})",
        f"- Scheduling: {pin_note}",
    ]


ANALYSIS = Path(__file__).resolve().parent / "analysis.md"


def _markdown_cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(
    rows: list[Row], pin_note: str, seconds: float, command: str, chart_name: Optional[str]
) -> str:
    """docs/performance.md: how the numbers were made, the table, the chart, the misses."""
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "# Performance",
        "",
        f"Written by `{command}` on {now}, a run of {seconds:.0f} s. Every number below "
        "comes from that one run; rerun `make bench` to remake this page.",
        "",
        "## Machine",
        "",
        *machine_description(pin_note),
        "",
        "## Method",
        "",
        *METHOD,
        "",
        "## Results",
        "",
    ]
    if chart_name:
        parts += [f"![pysock benchmark chart]({chart_name})", ""]
    parts += ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        for line in table_lines(row):
            parts.append("| " + " | ".join(_markdown_cell(cell) for cell in line) + " |")
    notes = [f"- {row.title}: {row.note}" for row in rows if row.note]
    if notes:
        parts += ["", "Notes:", "", *notes]
    parts += ["", "## Goals", "", *goal_summary(rows), ""]
    if ANALYSIS.exists():  # Hand-written: why a row misses, with a profile.
        parts += [ANALYSIS.read_text(encoding="utf-8").rstrip(), ""]
    return "\n".join(parts)


def goal_summary(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        if row.goal is None:
            continue
        value = row.checked_value
        if value is None:
            lines.append(f"- {row.title}: not measured (pysock n/a)")
            continue
        verdict = "met" if row.met else "**missed**"
        lines.append(
            f"- {row.title}: {row.goal_label} = {format_value(value, '')} "
            f"(goal {row.goal.text}): {verdict}"
        )
    return lines


METHOD = [
    "- `make bench` (= `python -m bench`) runs every case; `python -m bench --quick` is a "
    "smoke run with small sizes, `--case NAME` runs one case (see `--help`).",
    "- Each case's peer is a stdlib server in a separate process (spawned), on "
    "127.0.0.1 with port 0, so the client's GIL is the client's alone.",
    "- Implementations run interleaved within each case (raw, pysock, asyncio, trio, "
    "raw, pysock, ...), after one untimed warm-up each; the table shows the median "
    "of the repetitions (5; 7 for the plaintext transfers, which swing most; 3 fresh "
    "processes for the idle sockets) and their min-max. pysock/raw is the ratio of medians; for "
    "latency rows lower is better, for all others higher is better.",
    "- raw is a blocking `socket.socket` (with TCP_NODELAY, as pysock sets it), "
    "`ssl.SSLSocket` for TLS; asyncio uses streams (`open_connection`); trio is the "
    "bench-only extra (`pip install -e '.[bench]'`). The same 64 KiB call size is used "
    "by all.",
    "- What each implementation runs is described in the docstring of each module in "
    "`bench/cases/`. In short: receive = `sock.readable.readinto1(buf)` in a loop "
    "(`readinto(buf)` on the extra line), send = `sock.writable.write(chunk)`, round trip = "
    "`writable.write(64 bytes)` then `readable.readexactly(64)`, connect = "
    "`s = pysock.connect(addr); s.opened.result(); s.close()`, readline = "
    "`sock.readable.readline()`.",
    "- The timeout=10 rows run the same loops on `pysock.connect(addr, timeout=10)` "
    "against a raw socket with `sock.settimeout(10)`; readuntil = "
    "`readable.readuntil(b\"\\r\\n\")` against `makefile('rb').readline()` on CRLF lines, "
    "readexactly = `readable.readexactly(n)` against `makefile('rb').read(n)` and a length "
    'check. trio has no readline: its line is a `receive_some` + `find(b"\\n")` loop.',
    "- TLS cases use a trustme CA and a leaf for 127.0.0.1, TLS 1.3 pinned on both sides.",
    "- Idle sockets: a fresh client process per implementation and repetition; RSS is "
    "VmRSS from /proc/self/status before and after opening the sockets; threads are "
    "`threading.active_count()` (and /proc/self/task).",
    "- This machine is shared (other work may run on the other core), so numbers "
    "move by tens of percent between repetitions; compare the interleaved "
    "medians of one run, not numbers across runs.",
]


def write_chart(rows: list[Row], path: Path) -> bool:
    """A PNG with one panel per row: median bars with min-max whiskers, pysock highlighted.

    Returns False (and writes nothing) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    shown = [row for row in rows if any(s.available for s in row.series)]
    columns = 3
    lines = (len(shown) + columns - 1) // columns
    figure, axes = plt.subplots(lines, columns, figsize=(16, 3.1 * lines), squeeze=False)
    for ax, row in zip(axes.flat, shown):
        _panel(ax, row)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    figure.suptitle(
        "pysock vs baselines: median of the repetitions, whiskers = min-max "
        "(pysock in orange, raw stdlib socket in blue)",
        fontsize=12,
    )
    figure.tight_layout(rect=(0, 0, 1, 0.97))
    figure.savefig(path, dpi=80)
    plt.close(figure)
    return True


def _panel(ax: Any, row: Row) -> None:
    available = [s for s in row.series if s.available]
    names = [s.impl for s in available]
    medians = [s.median for s in available]
    low = [s.median - s.low for s in available]
    high = [s.high - s.median for s in available]
    colors = [
        "#f28e2b" if s.impl.startswith(PYSOCK) else "#4e79a7" if s.impl == RAW else "#bab0ac"
        for s in available
    ]
    positions = list(range(len(available)))[::-1]
    ax.barh(positions, medians, xerr=[low, high], color=colors, capsize=3)
    ax.set_yticks(positions)
    ax.set_yticklabels([_short(name) for name in names], fontsize=8)
    ax.set_xlabel(f"{row.unit} ({row.better} is better)", fontsize=8)
    verdict = ""
    if row.goal is not None and row.checked_value is not None:
        verdict = (
            f"\n{row.goal_label} {format_value(row.checked_value, '')}, goal {row.goal.text}: "
        )
        verdict += "met" if row.met else "MISSED"
    elif row.goal is not None:
        verdict = "\npysock n/a"
    ax.set_title(_short(row.title, 60) + verdict, fontsize=9)
    ax.tick_params(axis="x", labelsize=8)


def _short(text: str, width: int = 28) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
