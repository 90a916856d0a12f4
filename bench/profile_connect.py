"""Where a pysock connect + close spends its time: ``python -m bench.profile_connect``.

Times 5 x 2,000 loopback connect+close for ``socket.create_connection`` and
for pysock, side by side, then runs pysock's loop once more under cProfile:
it prints the calls per connect+close (all, and those of Python functions,
which are what the engine can cut) and the functions with the most time of
their own. The peer is a
subprocess that accepts and closes at EOF, so the client's GIL is its own.
The output is quoted in ``bench/analysis.md``.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import socket
import statistics
import subprocess
import sys
import time
from typing import Callable

import pysock

COUNT = 2000
REPS = 5
PEER = r"""
import selectors, socket
listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
listener.setblocking(False)
print(listener.getsockname()[1], flush=True)
selector = selectors.DefaultSelector()
selector.register(listener, selectors.EVENT_READ)
while True:
    for key, _ in selector.select():
        if key.fileobj is listener:
            while True:
                try:
                    conn, _ = listener.accept()
                except BlockingIOError:
                    break
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ)
            continue
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if not data:
            selector.unregister(key.fileobj)
            key.fileobj.close()
"""


def main() -> None:
    peer = subprocess.Popen([sys.executable, "-c", PEER], stdout=subprocess.PIPE, text=True)
    try:
        assert peer.stdout is not None
        port = int(peer.stdout.readline())
        run(("127.0.0.1", port))
    finally:
        peer.kill()
        peer.wait()


def run(addr: tuple[str, int]) -> None:
    address = f"{addr[0]}:{addr[1]}"

    def raw() -> None:
        for _ in range(COUNT):
            socket.create_connection(addr).close()

    def ps() -> None:
        connect = pysock.connect
        for _ in range(COUNT):
            sock = connect(address)
            sock.opened.result()
            sock.close()

    def timed(loop: Callable[[], None]) -> float:
        started = time.perf_counter()
        loop()
        return (time.perf_counter() - started) / COUNT * 1e6

    raw()
    ps()  # Warm-up: the loop thread, caches.
    raws, pysocks = [], []
    for _ in range(REPS):
        raws.append(timed(raw))
        pysocks.append(timed(ps))
    raw_us, pysock_us = statistics.median(raws), statistics.median(pysocks)
    print(
        f"connect+close, median of {REPS} x {COUNT:,}: raw {raw_us:.1f} us, "
        f"pysock {pysock_us:.1f} us; pysock/raw rate = {raw_us / pysock_us:.2f}"
    )
    profile = cProfile.Profile()
    profile.runcall(ps)
    out = io.StringIO()
    stats = pstats.Stats(profile, stream=out)
    counts = {key: value[1] for key, value in stats.stats.items()}  # type: ignore[attr-defined]
    python = sum(count for (path, _, _), count in counts.items() if path != "~")
    print(
        f"calls per connect+close: {sum(counts.values()) / COUNT:.0f}, "
        f"of Python functions: {python / COUNT:.0f}"
    )
    stats.sort_stats("tottime").print_stats(16)
    print(out.getvalue())


if __name__ == "__main__":
    main()
