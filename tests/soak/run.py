"""The soak's run: the workers, the snapshots, the reconciliation with the peer's
counts, and `main` (``python -m tests.soak``)."""

from __future__ import annotations

import argparse
import faulthandler
import gc
import os
import random
import ssl
import tempfile
import threading
import time
import traceback
from typing import Any, Optional

import trustme

from ..peers.load import STALL_TIMEOUT, Header, PeerProcess
from ..peers.tls import client_context
from .operation import Operation
from .plan import (
    DRAIN,
    MAX_FAILURES,
    OPERATIONS,
    PEER_OP,
    REPORT_EVERY,
    SLOW,
    TRANSPORTS,
    Ledger,
    snapshot,
)

# -- the run -----------------------------------------------------------------------------


class Soak:
    """The shared state of a run: the peer, the TLS contexts, the ledger."""

    def __init__(
        self,
        peer: PeerProcess,
        contexts: dict[str, ssl.SSLContext],
        only: Optional[list[str]] = None,
    ) -> None:
        self.operations = [entry for entry in OPERATIONS if only is None or entry[0] in only]
        self.peer = peer
        self.contexts = contexts
        self.ledger = Ledger()
        self.stop = threading.Event()

    def run_op(
        self, op: str, transport: str, rng: random.Random, size: Optional[int] = None
    ) -> None:
        ledger = self.ledger
        ledger.add("ops")
        ledger.add(f"op {op} started")
        ledger.add(f"transport {transport}")
        operation = Operation(self, op, transport, rng)
        began = time.monotonic()
        try:
            operation.run(size)
        except Exception:
            ledger.note(ledger.failures, f"{op} over {transport}:\n{traceback.format_exc()}")
            if len(ledger.failures) >= MAX_FAILURES:
                self.stop.set()
        else:
            ledger.add(f"outcome {op} {operation.outcome}")
            for key, n in operation.counts.items():
                ledger.add(key, n)
        took = time.monotonic() - began
        if took > SLOW:
            ledger.note(ledger.slow, f"{op} over {transport} took {took:.1f} s")

    def worker(self, seed: int, deadline: float) -> None:
        rng = random.Random(seed)
        names = [name for name, _, _ in self.operations]
        weights = [weight for _, weight, _ in self.operations]
        transports = {name: allowed for name, _, allowed in self.operations}
        while time.monotonic() < deadline and not self.stop.is_set():
            op = rng.choices(names, weights)[0]
            self.run_op(op, rng.choice(transports[op]), rng)


def start_peer(lifetime: float) -> tuple[PeerProcess, dict[str, ssl.SSLContext]]:
    """The soak peer in its own process, with a fresh trustme CA and a leaf for 127.0.0.1."""
    ca = trustme.CA()
    leaf = ca.issue_cert("127.0.0.1")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "leaf.pem")
        leaf.private_key_and_cert_chain_pem.write_to_path(path)
        peer = PeerProcess("soak", lifetime, path)  # Loaded before it answers.
    contexts = {}
    for name, version in (("1.2", ssl.TLSVersion.TLSv1_2), ("1.3", ssl.TLSVersion.TLSv1_3)):
        context = client_context(ca)
        context.minimum_version = context.maximum_version = version
        contexts[name] = context
    return peer, contexts


def drive(soak: Soak, seconds: float, threads: int, seed: int) -> list[str]:
    """Run the workers, printing a snapshot every REPORT_EVERY; return the stuck ones."""
    start = time.monotonic()
    deadline, give_up = start + seconds, start + seconds + DRAIN
    workers = [
        threading.Thread(
            target=soak.worker, args=(seed * 1000 + i, deadline), name=f"soak-{i}", daemon=True
        )
        for i in range(threads)
    ]
    for worker in workers:
        worker.start()
    next_report = start + REPORT_EVERY
    for worker in workers:
        while worker.is_alive() and time.monotonic() < give_up:
            worker.join(max(0.0, min(next_report, give_up) - time.monotonic()))
            if time.monotonic() >= next_report:
                snapshot(f"{next_report - start:.0f} s", soak.ledger)
                next_report += REPORT_EVERY
    stuck = [worker.name for worker in workers if worker.is_alive()]
    if stuck:
        soak.stop.set()
        faulthandler.dump_traceback(all_threads=True)
    return stuck


def settle(baseline: dict[str, int]) -> dict[str, int]:
    """The end snapshot, once descriptors handed to the loop are closed (bounded wait)."""
    for _ in range(50):
        gc.collect()
        fds, threads = len(os.listdir("/proc/self/fd")), threading.active_count()
        if (fds, threads) == (baseline["fds"], baseline["threads"]):
            break
        time.sleep(0.1)
    return snapshot("end")


def reconcile(
    soak: Soak, peer: dict[str, Any], stuck: list[str], snapshots: list[dict[str, int]]
) -> list[str]:
    """Every way the counts fail to add up, as messages (empty: all reconciled)."""
    c, failures = soak.ledger.counts, soak.ledger.failures
    problems = [f"{len(failures)} operations failed"] if failures else []
    if stuck:
        problems.append(f"threads still running: {stuck}")
    for op, _, _ in OPERATIONS:
        ended = sum(n for key, n in c.items() if key.startswith(f"outcome {op} "))
        failed = sum(1 for failure in failures if failure.startswith(f"{op} "))
        if c[f"op {op} started"] != ended + failed:
            problems.append(f"{op}: {c[f'op {op} started']} started, {ended + failed} ended")
    for peer_op in Header.OPS:
        ours = sum(c[f"op {op} started"] for op, theirs in PEER_OP.items() if theirs == peer_op)
        if peer.get(f"op {peer_op}", 0) != ours:
            problems.append(f"the peer saw {peer.get(f'op {peer_op}', 0)} {peer_op}, not {ours}")
    for kind in ("off", "on", "starttls"):
        if peer.get(f"accepted {kind}", 0) != c[f"connect {kind}"]:
            problems.append(f"the peer accepted {peer.get(f'accepted {kind}', 0)} {kind}")
    pairs = (
        ("echo written/checked", c["bytes echo written"], c["bytes echo checked"]),
        ("echo checked/peer echoed", c["bytes echo checked"], peer.get("bytes ECHO", 0)),
        ("download checked/peer sent", c["bytes download checked"], peer.get("bytes SEND", 0)),
        ("reset_write/peer", c["bytes reset_write announced"], peer.get("bytes RSTR", 0)),
    )
    problems += [f"bytes {what}: {a} != {b}" for what, a, b in pairs if a != b and not failures]
    clean = ("error ECHO", "error SEND ", "error handshake", "error RSTS", "error RSTR")
    problems += [f"peer: {key} x{peer[key]}" for key in peer if key.startswith(clean)]
    stalls = sum(n for key, n in peer.items() if key.startswith("error SENDX Timeout"))
    if stalls:
        problems.append(f"{stalls} peer sends still blocked {STALL_TIMEOUT} s after close()")
    if peer.get("unexpected") or peer.get("stuck"):
        problems.append(f"peer: unexpected {peer.get('unexpected')}, stuck {peer.get('stuck')}")
    start, baseline, end = snapshots
    if (end["fds"], end["threads"]) != (baseline["fds"], baseline["threads"]):
        problems.append(
            f"fds/threads at the end {end['fds']}/{end['threads']}, "
            f"at the baseline {baseline['fds']}/{baseline['threads']}"
        )
    if baseline["threads"] != start["threads"] + 1:
        problems.append("threads other than pysock-selector started before the baseline")
    return problems


def report(soak: Soak, peer: dict[str, Any], seconds: float) -> None:
    c, ledger = soak.ledger.counts, soak.ledger
    print(f"\n{c['ops']} operations in {seconds:.0f} s")
    for op, _, _ in OPERATIONS:
        outcomes = {k.split(" ", 2)[2]: n for k, n in c.items() if k.startswith(f"outcome {op} ")}
        print(f"  {op:<12} started {c[f'op {op} started']:>7}  {outcomes}")
    print("  transports: " + ", ".join(f"{t} {c[f'transport {t}']}" for t in TRANSPORTS))
    for key in sorted(k for k in c if k.startswith("bytes ")):
        print(f"  {key:<32} {c[key]:>15,}")
    shown = {k: v for k, v in peer.items() if k not in ("unexpected", "samples")}
    print(f"  peer: {shown}")
    for key, sample in sorted(peer.get("samples", {}).items()):
        print(f"  peer {key}: {sample}")
    for slow in ledger.slow[:MAX_FAILURES]:
        print(f"SLOW {slow}")
    for failure in ledger.failures[:MAX_FAILURES]:
        print(f"FAILURE {failure}")
    for text in peer.get("unexpected") or []:
        print(f"PEER FAILURE {text}")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak")
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--ops", default="", help="comma-separated operations (default: all)")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.randrange(1 << 32)
    print(f"soak: {args.seconds:.0f} s, {args.threads} threads, seed {seed}", flush=True)
    start = snapshot("start")
    peer, contexts = start_peer(args.seconds + DRAIN + 600)
    with peer:
        soak = Soak(peer, contexts, args.ops.split(",") if args.ops else None)
        for transport in TRANSPORTS:  # Warm-up: starts the pysock-selector thread.
            soak.run_op("echo", transport, random.Random(seed), size=0)
        baseline = snapshot("baseline", soak.ledger)
        began = time.monotonic()
        stuck = drive(soak, args.seconds, args.threads, seed)
        elapsed = time.monotonic() - began
        end = settle(baseline)
        peer_stats = peer.stop(DRAIN)
    report(soak, peer_stats, elapsed)
    problems = reconcile(soak, peer_stats, stuck, [start, baseline, end])
    for problem in problems:
        print(f"NOT RECONCILED: {problem}")
    print("reconciled: " + ("NO" if problems else "yes"), flush=True)
    return 1 if problems else 0
