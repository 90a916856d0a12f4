"""10,000 idle open sockets: memory and threads, then a peer reset of all of them.

Each repetition runs each implementation in a fresh spawned client process
(both import pysock, so the baseline is the same), which raises
RLIMIT_NOFILE to its hard limit, reads VmRSS (``/proc/self/status``) and the
thread count (``threading.active_count()`` and ``/proc/self/task``), opens N
connections to the idle peer, waits until all are open and reads them again:

* raw: ``socket.create_connection(addr)`` N times, kept in a list;
* pysock: ``pysock.connect("127.0.0.1:PORT")`` N times (in batches of 500,
  waiting for each batch's ``opened``, so as not to overflow the listen
  backlog), kept in a list.

Then, for pysock, the peer closes all N with SO_LINGER 0 (an RST each) and
the time from the peer's first close to the last ``closed`` future done
(``time.monotonic()`` is system-wide; the futures' done-callbacks record when
each completed) is the reset time. ``concurrent.futures.wait`` bounds the wait.
"""

from __future__ import annotations

import concurrent.futures
import gc
import multiprocessing
import os
import socket
import threading
import time
from typing import Any

from bench.model import PYSOCK, RAW, Config, Goal, Row, Series
from bench.peer import HOST, Peer, raise_fd_limit, running_peer

BATCH = 500
SPARE_FDS = 200
REPORT_TIMEOUT = 120.0
RESET_TIMEOUT = 30.0


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def _snapshot() -> dict[str, int]:
    gc.collect()
    return {
        "rss_kib": _rss_kib(),
        "threads": threading.active_count(),
        "tasks": len(os.listdir("/proc/self/task")),
    }


def _open_raw(port: int, n: int) -> list[Any]:
    return [socket.create_connection((HOST, port)) for _ in range(n)]


def _open_pysock(port: int, n: int) -> list[Any]:
    import pysock

    sockets: list[Any] = []
    address = f"{HOST}:{port}"
    while len(sockets) < n:
        batch = [pysock.connect(address) for _ in range(min(BATCH, n - len(sockets)))]
        for sock in batch:
            sock.opened.result(60)
        sockets.extend(batch)
    return sockets


def _watch_closed(sockets: list[Any]) -> tuple[list[Any], list[float]]:
    """Record when each ``closed`` future completes (on the thread that completes it)."""
    futures = [sock.closed for sock in sockets]
    stamps: list[float] = []
    for future in futures:
        future.add_done_callback(lambda _f: stamps.append(time.monotonic()))
    return futures, stamps


def idle_client(impl: str, port: int, n: int, pipe: Any) -> None:
    """The client process of one repetition (spawned): see the module docstring."""
    import pysock  # noqa: F401  (both implementations pay for the import before the baseline)

    before = _snapshot()
    sockets = _open_pysock(port, n) if impl == PYSOCK else _open_raw(port, n)
    time.sleep(0.2)  # Let the selector thread finish registering the last batch.
    after = _snapshot()
    watched = _watch_closed(sockets) if impl == PYSOCK else None
    pipe.send({"before": before, "after": after})
    if watched is not None:
        futures, stamps = watched
        done, _ = concurrent.futures.wait(futures, timeout=RESET_TIMEOUT)
        broken = sum(1 for f in done if f.exception() is not None)
        pipe.send({"last": max(stamps) if stamps else None, "done": len(done), "broken": broken})
    pipe.recv()  # "exit"
    for sock in sockets:
        sock.close()
    pipe.close()


def _fd_budget(n: int) -> tuple[int, str]:
    limit = raise_fd_limit()
    if limit >= n + SPARE_FDS:
        return n, f"RLIMIT_NOFILE raised to {limit}"
    scaled = max(100, limit - SPARE_FDS)
    return scaled, f"RLIMIT_NOFILE hard limit is {limit}: scaled down to {scaled:,} sockets"


def _one_rep(impl: str, n: int) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    with running_peer("idle", n=n) as peer:
        parent_end, child_end = ctx.Pipe()
        process = ctx.Process(target=idle_client, args=(impl, peer.port, n, child_end))
        process.start()
        child_end.close()
        try:
            result = _run_rep(impl, peer, parent_end, n)
        finally:
            _finish_client(parent_end, process)
    return result


def _receive(pipe: Any, timeout: float) -> Any:
    if not pipe.poll(timeout):
        raise TimeoutError(f"the idle client sent nothing within {timeout}s")
    return pipe.recv()


def _run_rep(impl: str, peer: Peer, pipe: Any, n: int) -> dict[str, Any]:
    report = _receive(pipe, REPORT_TIMEOUT)
    peer.send("count")
    accepted = peer.receive(10)
    result: dict[str, Any] = {
        "rss_per_socket_kib": (report["after"]["rss_kib"] - report["before"]["rss_kib"]) / n,
        "threads_added": report["after"]["threads"] - report["before"]["threads"],
        "tasks_added": report["after"]["tasks"] - report["before"]["tasks"],
        "accepted": accepted,
    }
    if impl == PYSOCK:
        peer.send("reset")
        start, peer_end, count = peer.receive(RESET_TIMEOUT)
        closed = _receive(pipe, RESET_TIMEOUT + 5)
        result["reset_s"] = closed["last"] - start if closed["last"] else float("nan")
        result["peer_close_s"] = peer_end - start
        result["closed_done"] = closed["done"]
        result["closed_broken"] = closed["broken"]
        result["reset_count"] = count
    return result


def _finish_client(pipe: Any, process: Any) -> None:
    try:
        pipe.send("exit")
    except OSError:
        pass
    process.join(30)
    if process.is_alive():
        process.terminate()
        process.join(5)
    pipe.close()


def case_idle(cfg: Config) -> list[Row]:
    """10,000 idle sockets (RSS, threads) and a peer reset of all of them."""
    n, fd_note = _fd_budget(cfg.size(10_000, 1_000))
    reps = max(1, min(cfg.reps, 3))
    results: dict[str, list[dict[str, Any]]] = {RAW: [], PYSOCK: []}
    for _ in range(reps):
        for impl in (RAW, PYSOCK):
            results[impl].append(_one_rep(impl, n))
    return _idle_rows(n, results, fd_note)


def _idle_rows(n: int, results: dict[str, list[dict[str, Any]]], fd_note: str) -> list[Row]:
    def series(key: str, impls: tuple[str, ...] = (RAW, PYSOCK)) -> list[Series]:
        return [Series(impl, [r[key] for r in results[impl]]) for impl in impls]

    rss = series("rss_per_socket_kib")
    threads = series("threads_added")
    reset = series("reset_s", (PYSOCK,))
    pysock_results = results[PYSOCK]
    done = min(r["closed_done"] for r in pysock_results)
    broken = min(r["closed_broken"] for r in pysock_results)
    peer_close = max(r["peer_close_s"] for r in pysock_results)
    tasks = [r["tasks_added"] for r in pysock_results]
    return [
        Row(
            "idle-rss",
            f"{n:,} idle open sockets: RSS per socket",
            "KiB",
            "lower",
            rss,
            Goal("<= +4 KiB", "<=", 4.0),
            goal_value=rss[1].median - rss[0].median,
            goal_label="pysock - raw (KiB)",
            note=fd_note,
        ),
        Row(
            "idle-threads",
            f"{n:,} idle open sockets: threads added",
            "threads",
            "lower",
            threads,
            Goal("1 thread", "<=", 1.0),
            goal_value=threads[1].median,
            goal_label="pysock threads added",
            note=f"/proc/self/task grew by {tasks} for pysock",
        ),
        Row(
            "idle-reset",
            f"peer reset of all {n:,}: time until every `closed` is done",
            "s",
            "lower",
            reset,
            Goal("<= 2 s", "<=", 2.0),
            goal_value=reset[0].median,
            goal_label="seconds",
            note=f"{done:,}/{n:,} closed done, {broken:,} with BrokenSocketError; "
            f"the peer's own close loop took up to {peer_close:.2f} s",
        ),
    ]
