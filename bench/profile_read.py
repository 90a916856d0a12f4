"""Where a pysock readline() spends its time: ``python -m bench.profile_read [--timeout 10]``.

Times 5 x 200,000 short (20-byte) lines read with ``makefile('rb').readline()``
and with pysock's ``readable.readline()``, side by side and with the same
timeout (none, or ``--timeout``: ``sock.settimeout()`` for raw,
``pysock.connect(addr, timeout=...)`` for pysock), then reads the lines once
more with pysock under cProfile and prints the functions with the most time
of their own and the calls per readline. The peer is the bench's ``stream``
peer in its own process, so the client's GIL is its own.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import statistics
import sysconfig
from pathlib import Path
from typing import Optional

from bench.cases._common import pysock_connect
from bench.cases.lines import pysock_lines, raw_lines
from bench.peer import Peer, command, running_peer

COUNT = 200_000
REPS = 5
TOP = 15
ROOT = Path(__file__).resolve().parent.parent


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.profile_read",
        description="Time and profile pysock's readline() against makefile('rb').readline().",
    )
    parser.add_argument("--timeout", type=float, default=None, help="seconds (default: none)")
    parser.add_argument("--count", type=int, default=COUNT, help=f"lines (default {COUNT:,})")
    parser.add_argument("--top", type=int, default=TOP, help=f"functions shown (default {TOP})")
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> None:
    args = parse_args(argv)
    with running_peer("stream", line_counts=(args.count,)) as peer:
        timed(peer, args.count, args.timeout)
        profiled(peer, args.count, args.timeout, args.top)


def timed(peer: Peer, count: int, timeout: Optional[float]) -> None:
    """Print the median time per line of raw and pysock, interleaved."""
    raw_lines(peer, count, timeout)  # Warm-up: the loop thread, the peer's threads.
    pysock_lines(peer, count, timeout)
    raws, pysocks = [], []
    for _ in range(REPS):
        raws.append(1e6 / raw_lines(peer, count, timeout))
        pysocks.append(1e6 / pysock_lines(peer, count, timeout))
    raw_us, pysock_us = statistics.median(raws), statistics.median(pysocks)
    print(
        f"readline, timeout={_label(timeout)}, median of {REPS} x {count:,} lines: "
        f"raw {raw_us:.3f} us, pysock {pysock_us:.3f} us per line; "
        f"pysock/raw rate = {raw_us / pysock_us:.2f}"
    )


def read_lines(readable: object, count: int) -> bytes:
    """The profiled loop: `count` readline() calls, nothing else."""
    readline = readable.readline  # type: ignore[attr-defined]
    line = b""
    for _ in range(count):
        line = readline()
    return line


def profiled(peer: Peer, count: int, timeout: Optional[float], top: int) -> None:
    """Read `count` lines with pysock under cProfile; print the top functions and calls."""
    sock = pysock_connect(peer.address, timeout=timeout)
    try:
        sock.writable.write(command(b"L", count))
        sock.readable.peek(1)  # The first bytes are there: the profile starts on data.
        profile = cProfile.Profile()
        profile.runcall(read_lines, sock.readable, count)
    finally:
        sock.close()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(top)
    stdlib = sysconfig.get_paths()["stdlib"]
    print(out.getvalue().replace(f"{ROOT}/", "").replace(f"{stdlib}/", "").rstrip() + "\n")
    # One entry per function: code objects are Python functions, strings are builtins.
    entries = profile.getstats()
    python = sum(e.callcount for e in entries if not isinstance(e.code, str))
    builtin = sum(e.callcount for e in entries if isinstance(e.code, str))
    print(
        f"pysock readline(), timeout={_label(timeout)}: {python + builtin:,} calls "
        f"for {count:,} lines = {(python + builtin) / count:.2f} calls per readline: "
        f"{python / count:.2f} Python functions (readline itself included), "
        f"{builtin / count:.2f} builtins (C functions and methods)"
    )


def _label(timeout: Optional[float]) -> str:
    return "None" if timeout is None else f"{timeout:g}"


if __name__ == "__main__":  # Also imported as __mp_main__ by the spawned peer process.
    main()
