"""Refuse to run without the GIL, with a message that says what to do.

pysock's close handshake (the ``_reading``/``_writing`` flags and the
``_descriptor`` state of `pysock._descriptor`, each side writing its own
flag and then reading the other's), the reader's fast-path flags and the loop's wake-up
flag are sound because every bytecode is atomic under the GIL. A
free-threaded CPython build (3.13t and later) runs without it unless told
otherwise, and there those handshakes could interleave: a descriptor could
be closed under a blocked call, a wake-up lost. Rather than be silently
racy, pysock refuses to import there; with the GIL turned back on it is
the same as on any other build.
"""

from __future__ import annotations

import sys
from typing import Callable


def require_gil(is_gil_enabled: Callable[[], bool]) -> None:
    """Raise ImportError if `is_gil_enabled()` says the GIL is off."""
    if not is_gil_enabled():
        raise ImportError(
            "pysock needs the GIL: this free-threaded Python runs without it, and pysock's "
            "close and wake-up handshakes rely on it. Run with the GIL enabled: "
            "PYTHON_GIL=1 or python -X gil=1"
        )


# Builds before 3.13 have no sys._is_gil_enabled: they always hold the GIL.
require_gil(getattr(sys, "_is_gil_enabled", lambda: True))
