"""`SocketStream`: the chunked body of a web response, read from a socket it owns.

Theory of operation
===================

A web view returns the stream and the WSGI server iterates it after the view
has returned, so an error the stream raises meets the server, not the view.
Servers take some errors for "the HTTP client went away" and drop them:
Werkzeug's development server every `ConnectionError` and `TimeoutError`
(``werkzeug.serving.connection_dropped_errors``), gunicorn an `OSError` whose
``errno`` is EPIPE, ECONNRESET or ENOTCONN; and no server can answer 500 once
the body has begun. docs/streaming.md has what each server does.

Hence two rules. The stream waits for ``opened`` when it is made, in the view,
so that an opening error (`ConnectError`, `TLSError`, a connect
`SocketTimeout`) is raised there, where Flask and Django answer 500 and log
it; the socket is closed first. And an error of the upstream in the middle of
the body is logged on the ``pysock`` logger at WARNING, naming the upstream,
before it is raised to the server: whatever the server does with it, the log
says that the upstream, not the HTTP client, cut the response short. A
`close()` from the server (the end of a response, or a client that went away)
is no failure: a DEBUG line at most.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Final

from .errors import SocketClosedError

if TYPE_CHECKING:
    from ._socket import Socket

__all__ = ["DEFAULT_STREAM_CHUNK", "SocketStream"]

# The chunk size of `Socket.stream()`: what a WSGI server writes per chunk.
DEFAULT_STREAM_CHUNK: Final = 64 * 1024

# The library's one logger (see _connection.py): silent unless configured, but
# for the WARNING of an upstream that failed mid-body.
_log = logging.getLogger("pysock")


class SocketStream:
    """The iterator of `Socket.stream()`: chunks of the peer's bytes; closing it closes the socket.

    Made once the socket is open (the opening's error is raised to the caller).
    Reads wait as ``readable.read1()`` does (the socket's ``timeout`` applies to
    each). A read error is logged at WARNING on the ``pysock`` logger and
    raised once, after the socket is closed; the iteration then ends.
    """

    __slots__ = ("_chunk_size", "_done", "_sent", "socket")

    def __init__(self, sock: Socket, chunk_size: int) -> None:
        """Internal: use `Socket.stream()`.

        Raises:
            The opening's error (`ConnectError`, `TLSError`, `SocketTimeout`,
            or `SocketClosedError` if the socket was closed while connecting);
            the socket is closed.
        """
        self.socket = sock
        self._chunk_size = chunk_size
        self._done = False
        self._sent = 0
        try:
            _wait_opened(sock)
        except BaseException:
            self._end()
            raise

    def __iter__(self) -> SocketStream:
        return self

    def __next__(self) -> bytes:
        if self._done:
            raise StopIteration
        try:
            chunk = self.socket.readable.read1(self._chunk_size)
        except SocketClosedError:
            if self._done:  # close() from another thread (the client went away).
                raise StopIteration from None
            self._end()  # Your code closed the socket: not the upstream's failure.
            raise
        except Exception as exc:
            if not self._done:  # Else close() came first, in another thread: its end.
                self._log_failure(exc)  # First: once the peer sees the close, it is logged.
            self._end()
            raise
        except BaseException:
            self._end()
            raise
        if not chunk:
            self._end()
            raise StopIteration
        self._sent += len(chunk)
        return chunk

    def close(self) -> None:
        """Close the socket and end the iteration. Idempotent."""
        if not self._done:  # The server ended the response first (the client went away?).
            _log.debug(
                "%s: stream closed before the upstream's end, after %d bytes",
                self.socket._connection.endpoint,
                self._sent,
            )
        self._end()

    def _end(self) -> None:
        self._done = True
        self.socket.close()

    def _log_failure(self, exc: Exception) -> None:
        # One line, no traceback: the traceback would show the server's loop, and
        # the server may log the error itself (gunicorn) or drop it (Werkzeug).
        _log.warning(
            "%s: the upstream failed mid-stream after %d bytes, the response is cut short: %s: %s",
            self.socket._connection.endpoint,
            self._sent,
            type(exc).__name__,
            exc,
        )

    def __repr__(self) -> str:
        state = "done" if self._done else f"chunks of up to {self._chunk_size} bytes"
        return f"<pysock.SocketStream of {self.socket!r}, {state}>"


def _wait_opened(sock: Socket) -> None:
    """Wait for `sock` to open, within its connect timeout; raise the opening's error."""
    connection = sock._connection
    if connection.inherited:  # A forked child's copy: its opening is the parent's.
        raise SocketClosedError(f"{sock!r} was inherited from the parent process")
    timeout = connection.options.connect_timeout
    connection.wait_opened(None if timeout is None else time.monotonic() + timeout, "stream()")
