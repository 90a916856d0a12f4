"""The ``pysock`` command: ``pysock HOST:PORT``, an interactive client for a terminal.

A layer on top of the library: it uses pysock's public API (and `_tls`'s
option constant), and `pysock` itself never imports it. `_main` parses the
arguments and builds the TLS context, `_session` runs one connection (stdin
to the socket, the socket to stdout), `_preambles` speaks each protocol's
STARTTLS preamble, and `_report` holds the exit statuses and the stderr
lines. `demo` is the offline transcript of ``make demo``
(``python -m pysock.cli.demo``).
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
