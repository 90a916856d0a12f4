"""pysock: the Cloudflare Workers TCP socket API (``connect()``) for synchronous Python."""

from __future__ import annotations

# First: a free-threaded build running without the GIL is refused (see _gil).
from . import _gil  # noqa: F401
from ._address import SocketAddress, UnixAddress
from ._body import SocketStream
from ._guard import deny_private
from ._info import SocketInfo, TLSInfo
from ._options import SocketOptions
from ._reader import SocketReader
from ._socket import Socket, connect
from ._writer import SocketWriter
from .errors import (
    BrokenSocketError,
    ConnectError,
    IncompleteReadError,
    LimitOverrunError,
    PysockError,
    SocketClosedError,
    SocketTimeout,
    StartTlsError,
    TLSError,
)

__version__ = "0.1.0"

__all__ = [
    "BrokenSocketError",
    "ConnectError",
    "IncompleteReadError",
    "LimitOverrunError",
    "PysockError",
    "Socket",
    "SocketAddress",
    "SocketClosedError",
    "SocketInfo",
    "SocketOptions",
    "SocketReader",
    "SocketStream",
    "SocketTimeout",
    "SocketWriter",
    "StartTlsError",
    "TLSError",
    "TLSInfo",
    "UnixAddress",
    "__version__",
    "connect",
    "deny_private",
]
