"""Command line: run the cases, print the table, write docs/performance.md and the chart."""

from __future__ import annotations

import argparse
import faulthandler
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from bench import report
from bench.cases.connect import case_connect, case_tls_connect
from bench.cases.idle import case_idle
from bench.cases.latency import case_round_trip, case_round_trip_busy, case_round_trip_timeout
from bench.cases.lines import case_readline, case_readline_timeout
from bench.cases.records import case_readexactly, case_readuntil
from bench.cases.throughput import (
    case_receive,
    case_receive_timeout,
    case_send,
    case_tls_receive,
)
from bench.model import Config, Row
from bench.peer import pin_cpus
from bench.tlsconf import TLSMaterial, make_material

DOCS = Path(__file__).resolve().parent.parent / "docs"
WATCHDOG_SECONDS = 900  # The whole run is killed (with tracebacks) if it hangs this long.

CaseFunction = Callable[[Config], list[Row]]


def _cases(material: TLSMaterial) -> dict[str, CaseFunction]:
    return {
        "receive": case_receive,
        "send": case_send,
        "tls-receive": lambda cfg: case_tls_receive(cfg, material),
        "rtt": case_round_trip,
        "rtt-busy": case_round_trip_busy,
        "connect": case_connect,
        "tls-connect": lambda cfg: case_tls_connect(cfg, material),
        "idle": case_idle,
        "readline": case_readline,
        "readline-timeout": case_readline_timeout,
        "readuntil": case_readuntil,
        "readexactly": case_readexactly,
        "receive-timeout": case_receive_timeout,
        "rtt-timeout": case_round_trip_timeout,
    }


CASE_NAMES = (
    "receive",
    "send",
    "tls-receive",
    "rtt",
    "rtt-busy",
    "connect",
    "tls-connect",
    "idle",
    "readline",
    "readline-timeout",
    "readuntil",
    "readexactly",
    "receive-timeout",
    "rtt-timeout",
)


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="pysock's benchmark: pysock vs raw sockets, asyncio, trio.",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument(
        "--case", action="append", choices=CASE_NAMES, help="run only this case (repeatable)"
    )
    parser.add_argument("--reps", type=int, default=None, help="repetitions (default 5, quick 2)")
    parser.add_argument(
        "--pin", action="store_true", help="pin the client to CPU 0 and the peers to CPU 1"
    )
    write = parser.add_mutually_exclusive_group()
    write.add_argument("--write", action="store_true", help="write docs/ even for a partial run")
    write.add_argument("--no-write", action="store_true", help="do not write docs/")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)
    reps = args.reps if args.reps is not None else (2 if args.quick else 5)
    if reps < 1:
        raise SystemExit("--reps must be at least 1")
    cfg = Config(quick=args.quick, reps=reps)
    pin_note = pin_cpus(args.pin)
    cases = _cases(make_material())
    names = args.case or list(CASE_NAMES)
    started = time.monotonic()
    rows: list[Row] = []
    for name in names:
        case_started = time.monotonic()
        print(f"-- {name} ...", file=sys.stderr, flush=True)
        rows.extend(cases[name](cfg))
        print(f"-- {name}: {time.monotonic() - case_started:.1f} s", file=sys.stderr, flush=True)
    seconds = time.monotonic() - started
    report.print_table(rows)
    print(f"\n{len(names)} case(s) in {seconds:.0f} s; {pin_note}.")
    full_run = not args.quick and not args.case
    if args.write or (full_run and not args.no_write):
        _write_docs(rows, pin_note, seconds, argv)
    faulthandler.cancel_dump_traceback_later()
    return 0


def _write_docs(rows: list[Row], pin_note: str, seconds: float, argv: Optional[list[str]]) -> None:
    DOCS.mkdir(exist_ok=True)
    chart = DOCS / "performance.png"
    has_chart = report.write_chart(rows, chart)
    command = " ".join(["python -m bench", *(argv if argv is not None else sys.argv[1:])]).strip()
    text = report.markdown(rows, pin_note, seconds, command, chart.name if has_chart else None)
    (DOCS / "performance.md").write_text(text, encoding="utf-8")
    print(f"wrote {DOCS / 'performance.md'}" + (f" and {chart}" if has_chart else ""))
