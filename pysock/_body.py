"""`SocketStream`: the chunked body of a web response, read from a socket it owns."""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from .errors import SocketClosedError

if TYPE_CHECKING:
    from ._socket import Socket

__all__ = ["DEFAULT_STREAM_CHUNK", "SocketStream"]

# The chunk size of `Socket.stream()`: what a WSGI server writes per chunk.
DEFAULT_STREAM_CHUNK: Final = 64 * 1024


class SocketStream:
    """The iterator of `Socket.stream()`: chunks of the peer's bytes; closing it closes the socket.

    Reads wait as ``readable.read1()`` does (the socket's ``timeout`` applies to
    each). A read error is raised once, after the socket is closed; the
    iteration then ends.
    """

    __slots__ = ("_chunk_size", "_done", "socket")

    def __init__(self, sock: Socket, chunk_size: int) -> None:
        """Internal: use `Socket.stream()`."""
        self.socket = sock
        self._chunk_size = chunk_size
        self._done = False

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
            self.close()
            raise
        except BaseException:
            self.close()
            raise
        if not chunk:
            self.close()
            raise StopIteration
        return chunk

    def close(self) -> None:
        """Close the socket and end the iteration. Idempotent."""
        self._done = True
        self.socket.close()

    def __repr__(self) -> str:
        state = "done" if self._done else f"chunks of up to {self._chunk_size} bytes"
        return f"<pysock.SocketStream of {self.socket!r}, {state}>"
