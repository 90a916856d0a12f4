"""Peers for the load test and the soak: stdlib servers in a separate process.

The peer runs in its own process (``python -m tests.peers.load
MODE LIFETIME [ARGS]``) so that the client under test has its GIL to itself.
The parent talks to it through the child's stdin and stdout, one JSON object
per line: the peer first prints ``{"ports": {...}}``, then answers each
request (``{"op": "stats"}``, ``{"op": "reset"}``, ``{"op": "stop"}``). The
peer exits at ``stop``, when its stdin reaches EOF (the parent died) or when
its lifetime runs out, so a crashed test leaves nothing behind.

Modes:

* ``echo``: one selector thread echoes every connection until its EOF, then
  closes it. It never blocks: what it cannot send yet waits in memory (at
  most `PENDING_CAP` per connection, then it stops reading that connection),
  so a client that writes a chunk before reading it back never deadlocks.
  ``reset`` closes every open connection with SO_LINGER (1, 0), an RST each.
  Used for the 1,000 busy sockets and the 10,000 idle ones.
* ``soak``: three listeners (``off``: plain TCP, ``on``: TLS from the first
  byte, ``starttls``: the line ``STARTTLS`` answered by ``GO`` before the
  handshake) and a thread per connection obeying one header line (`Header`).

Both sides of the soak make the same byte stream from an offset
(`pattern_chunks`), so a download is checked without sending its checksum.

The modules: `protocol` (what both sides share), `parent` (`PeerProcess`),
`peer` (the process's modes and `main`).
"""

from __future__ import annotations

from .parent import MODULE, ROOT, PeerProcess
from .peer import raise_fd_limit
from .protocol import HOST, STALL_TIMEOUT, Header, pattern_chunks

__all__ = [
    "HOST",
    "MODULE",
    "ROOT",
    "STALL_TIMEOUT",
    "Header",
    "PeerProcess",
    "pattern_chunks",
    "raise_fd_limit",
]
