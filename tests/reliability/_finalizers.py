"""What finalizers did while a block ran: ResourceWarnings and exceptions they raised."""

from __future__ import annotations

import contextlib
import gc
import sys
import warnings
from typing import Any, Iterator


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
