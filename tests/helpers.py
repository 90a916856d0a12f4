"""Small helpers shared by the tests, their peers and the child processes.

Socket helpers for peers (stdlib sockets: each call is bounded by the socket's
own timeout), bounded waits, and checks of what a call raised. The child
processes (tests/peers/child_scripts/, tests/peers/load/) import this
module before pysock, since a scenario may need its `atexit` handler
registered first: nothing here imports pysock or pytest at import time.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import socket
import ssl
import struct
import sys
import threading
import time
import warnings
from typing import Any, Callable, Final, Iterator, Optional

# struct linger {l_onoff=1, l_linger=0}: close() then sends RST instead of FIN.
LINGER_ZERO: Final = struct.pack("ii", 1, 0)
# The longest a test waits for what takes milliseconds (a fault waking a blocked
# call, `closed` completing, a thread starting): far above what it takes, so that
# a hang fails the test with a message instead of hitting pytest-timeout.
WAKE: Final = 5.0
# How often a wait with no event to wait on looks again.
_POLL: Final = 0.005
# One recv() of `recv_exactly`: large transfers (8 MiB) in few calls.
_RECV_SIZE: Final = 1024 * 1024

# -- a peer's side of a connection ------------------------------------------------------


def reset(conn: socket.socket) -> None:
    """Abort the connection: SO_LINGER (1, 0), then close() sends RST."""
    try:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ZERO)
    finally:
        conn.close()


def recv_exactly(conn: socket.socket, size: int) -> bytes:
    """Exactly `size` bytes; `EOFError` if the connection ends first."""
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(min(size - len(data), _RECV_SIZE))
        if not chunk:
            raise EOFError(f"EOF after {len(data)} of {size} bytes: {bytes(data[-40:])!r}")
        data += chunk
    return bytes(data)


def recv_all(conn: socket.socket) -> bytes:
    """Read until EOF."""
    chunks: list[bytes] = []
    while data := conn.recv(65536):
        chunks.append(data)
    return b"".join(chunks)


def recv_all_or_reset(conn: socket.socket) -> bytes:
    """Read until EOF or until the client breaks the connection; what arrived before.

    A client that closes with bytes unread resets the connection, and over TLS
    it may end with an alert: both end the read here. A timeout does not: a
    client that never ends is a failure to see.
    """
    chunks: list[bytes] = []
    try:
        while data := conn.recv(65536):
            chunks.append(data)
    except (ConnectionError, ssl.SSLError):
        pass
    return b"".join(chunks)


def recv_line(conn: socket.socket) -> bytes:
    """One line, byte by byte (nothing after it is consumed); what arrived, at EOF."""
    line = b""
    while not line.endswith(b"\n"):
        data = conn.recv(1)
        if not data:
            break
        line += data
    return line


def drain(conn: socket.socket) -> int:
    """Read and drop raw bytes until EOF or an error; return the count."""
    total = 0
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return total
            total += len(data)
    except OSError:  # The client reset the connection (closing with unread bytes).
        return total


# -- bounded waits ----------------------------------------------------------------------


def wait_for(condition: Callable[[], object], timeout: float) -> bool:
    """Poll a condition that has no event to wait on; whether it came true in time."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
    return True


def wait_until(predicate: Callable[[], object], what: str, timeout: float = WAKE) -> None:
    """`wait_for`, failing the test if `what` did not happen in time."""
    assert wait_for(predicate, timeout), f"timed out waiting for {what}"


def sync_loop() -> None:
    """Wait until the selector thread has run every command queued so far (twice,
    since a command may queue another)."""
    from pysock import _loop  # Here, not at the top: see the module docstring.

    for _ in range(2):
        done = threading.Event()
        _loop.get_loop().call_soon_threadsafe(done.set)
        assert done.wait(10), "the selector thread did not answer"


def reap(pid: int, timeout: float) -> Optional[int]:
    """Wait for child `pid` with a deadline; kill it past the deadline.

    Returns its exit code, or None if it had to be killed.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


# -- what a call raised -------------------------------------------------------------------


def same_error(raised: Optional[BaseException], stored: Optional[BaseException]) -> bool:
    """True if `raised` is `stored` raised again: the same class, message and cause.

    pysock raises a stored error (the one in ``opened`` or ``closed``) as a fresh
    copy each time, so that its traceback is that call's alone.
    """
    if raised is None or stored is None:
        return raised is stored
    return (
        type(raised) is type(stored)
        and raised.args == stored.args
        and str(raised) == str(stored)
        and raised.__cause__ is stored.__cause__
    )


def raised_by(call: Callable[..., Any], *args: Any, **kwargs: Any) -> Optional[type]:
    """The class `call` raised, or None. Keeps no traceback: the frames (and any
    half-built object in them) are freed here, inside the caller's checks."""
    try:
        call(*args, **kwargs)
    except Exception as exc:
        return type(exc)
    return None


@contextlib.contextmanager
def finalizer_problems() -> Iterator[list[str]]:
    """Collect ResourceWarnings and finalizer exceptions (a half-built or leaked socket).

    The block's garbage is collected before it ends, so objects it dropped are
    finalized inside it.
    """
    problems: list[str] = []
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        problems.append(f"{unraisable.exc_type.__name__}: {unraisable.exc_value!r}")

    sys.unraisablehook = hook
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield problems
            gc.collect()
        problems.extend(str(w.message) for w in caught if w.category is ResourceWarning)
    finally:
        sys.unraisablehook = previous
