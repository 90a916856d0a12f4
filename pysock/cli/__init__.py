"""The ``pysock`` command: ``pysock HOST:PORT``, an interactive client for a terminal.

A client of the library like any other: `pysock` itself never imports this
package. `_main` parses the arguments, `_preambles` speaks each protocol's
STARTTLS preamble, and `demo` is the offline transcript of ``make demo``
(``python -m pysock.cli.demo``).
"""

from __future__ import annotations

from ._main import main

__all__ = ["main"]
