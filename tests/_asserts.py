"""Assertions shared by the test modules."""

from __future__ import annotations

from typing import Optional


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
